"""The Tokens tab: tokenize one or two images, edit the token sequences (:mod:`app.token_edits`) and
decode everything with the same noise, so only the edit changes the pictures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from generator.pipeline import Pipeline

from . import token_edits
from .checks import check_decode, check_seed, image_tensor
from .decoding import ProgressFn, within
from .limits import DemoLimits, check_float, check_int
from .models import LoadedModels
from .visualize import for_display, token_map

TOKEN_OPERATIONS = ("swap", "randomize", "mix")


@dataclass
class TokenEditResult:
    """What one Tokens request returns: the inputs and their edits, in display order."""

    images: Tensor  # (K, 3, H, W)
    indices: Tensor  # (K, N)
    labels: list[str]
    grid: Image.Image
    token_map: Image.Image


def edit_tokens(models: LoadedModels, limits: DemoLimits, image_a: Any, image_b: Any = None,
                operation: str = "swap", start: int = 0, end: int | None = None, fraction: float = 0.25,
                alpha: float = 0.5, seed: int = 0, decode_steps: int | None = None, decode_cfg: float | None = None,
                progress: ProgressFn | None = None) -> TokenEditResult:
    """Tokenize A (and B), edit the token sequences, decode everything with the same noise.

    swap: A and B exchange positions [start, end); randomize: ``fraction`` of A's positions get
    random indices; mix: each position from B with probability ``alpha``, else from A.
    """
    from runkit.images import make_grid_image

    pipe = Pipeline(None, models.tokenizer)
    tok = models.tokenizer.config
    if operation not in TOKEN_OPERATIONS:
        raise ValueError(f"operation {operation!r}; choose one of {list(TOKEN_OPERATIONS)}")
    decode_steps, decode_cfg = check_decode(limits, models.tokenizer, decode_steps, decode_cfg)
    seed = check_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    needs_b = operation in ("swap", "mix")
    images = [image_tensor(limits, models.tokenizer, image_a, "image A")]
    if needs_b:
        images.append(image_tensor(limits, models.tokenizer, image_b, "image B"))
    tokens = pipe.tokenize(torch.cat(images))
    if operation == "swap":
        start = check_int("span start", start, 0, tok.num_indices - 1)
        end = check_int("span end", tok.num_indices if end in (None, "") else end, start + 1, tok.num_indices)
        a_edit, b_edit = token_edits.swap_span(tokens[:1], tokens[1:], start, end)
        edited = torch.cat([tokens, a_edit, b_edit])
        labels = ["A", "B", f"A + B[{start}:{end}]", f"B + A[{start}:{end}]"]
    elif operation == "randomize":
        fraction = check_float("fraction", fraction, 0.0, 1.0)
        edited = torch.cat([tokens, token_edits.randomize(tokens, fraction, tok.vocab_size, rng)])
        labels = ["A", f"A, {fraction:.0%} random"]
    else:
        alpha = check_float("alpha", alpha, 0.0, 1.0)
        edited = torch.cat([tokens[:1], token_edits.mix(tokens[:1], tokens[1:], alpha, rng), tokens[1:]])
        labels = ["A", f"mix alpha={alpha:.2f}", "B"]
    decoded = pipe.decode(edited, seed=seed, steps=decode_steps, cfg=decode_cfg, shared_noise=True,
                          progress=within(progress, 0.05, 1.0))
    return TokenEditResult(images=decoded, indices=edited, labels=labels,
                           grid=make_grid_image(for_display(decoded), nrow=len(labels), labels=labels),
                           token_map=token_map(models.tokenizer, edited, len(labels), labels))
