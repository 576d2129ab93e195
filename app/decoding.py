"""Decoding token indices into images with seeded noise, reporting progress along the way.

Long work reports through ``progress(fraction, message)`` callbacks (:data:`ProgressFn`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

ProgressFn = Callable[[float, str], None]


def decode(tokenizer: Any, indices: Tensor, steps: int, cfg: float, seed: int, progress: ProgressFn | None,
           span: tuple[float, float], shared_noise: bool = False) -> Tensor:
    """Indices (B, N) -> images (B, 3, S, S) on the CPU, the starting noise drawn from ``seed`` on the CPU
    (one draw for every row with ``shared_noise``); progress runs over ``span`` of the request."""
    size = tokenizer.config.image_size
    cpu = torch.Generator().manual_seed(seed)
    rows = 1 if shared_noise else indices.shape[0]
    noise = torch.randn(rows, 3, size, size, generator=cpu).expand(indices.shape[0], -1, -1, -1)

    def report(step: int, total: int) -> None:
        if progress is not None:
            progress(span[0] + (span[1] - span[0]) * step / total, f"decoding: step {step}/{total}")

    with torch.inference_mode():
        images = tokenizer.decode(indices.to(tokenizer.device), steps=steps, cfg=cfg, noise=noise,
                                  progress=report)
    return images.float().cpu()
