"""Token-level edits of FlowMo index sequences: the operations of the demo's Tokens tab.

All functions take and return int64 indices (B, N) in token-major order (see
``FlowMoConfig.num_indices``) and never modify their inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"token sequences must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _check_span(start: int, end: int, length: int) -> None:
    if not 0 <= start < end <= length:
        raise ValueError(f"token span [{start}, {end}) must satisfy 0 <= start < end <= {length}")


def swap_span(a: Tensor, b: Tensor, start: int, end: int) -> tuple[Tensor, Tensor]:
    """Exchange positions [start, end) between a and b (B, N) -> (a with b's span, b with a's span)."""
    _check_pair(a, b)
    _check_span(start, end, a.shape[-1])
    a_out, b_out = a.clone(), b.clone()
    a_out[..., start:end] = b[..., start:end]
    b_out[..., start:end] = a[..., start:end]
    return a_out, b_out


def randomize(indices: Tensor, fraction: float, vocab_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Replace round(fraction * N) positions, chosen uniformly, by uniform random indices (B, N).

    The same positions are replaced in every row so a batch shows one edit applied to several images.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    n = indices.shape[-1]
    count = round(fraction * n)
    positions = torch.randperm(n, generator=generator)[:count].to(indices.device)
    values = torch.randint(vocab_size, (*indices.shape[:-1], count), generator=generator).to(indices)
    out = indices.clone()
    out[..., positions] = values
    return out


def mix(a: Tensor, b: Tensor, alpha: float, generator: torch.Generator | None = None) -> Tensor:
    """Per position take b with probability alpha, else a (B, N): alpha 0 gives a, alpha 1 gives b.

    One uniform draw per position decides for every alpha, so a sweep over alpha with the same
    generator seed changes monotonically from a to b (a position, once switched, stays switched).
    """
    _check_pair(a, b)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    draws = torch.rand(a.shape[-1], generator=generator).to(a.device)
    return torch.where(draws < alpha, b, a)
