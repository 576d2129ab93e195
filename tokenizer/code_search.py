"""Code search: encoding by analysis-by-synthesis.

The encoder predicts a code in one pass (amortised inference); a small encoder leaves a gap between
its code and the best code the decoder can turn back into the image. :func:`search_code` closes part
of that gap the way classic encoders do rate-distortion optimisation: it decodes candidate codes and
keeps what brings the reconstruction closer to the input. The bits per image, the decoder and the
token format are unchanged; only encoding costs more (``passes * bits_per_image`` decodes per image,
batched over the images: :func:`search_evaluations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .model import FlowMo


@dataclass
class CodeSearchResult:
    """What :func:`search_code` found for a batch of B images."""

    code: Tensor  # (B, L, C) in {-1, +1}
    indices: Tensor  # (B, N) int64, the same code as token indices
    start_mse: Tensor  # (B,) decode-vs-input MSE of the starting code (the encoder's unless given), images in [-1, 1]
    mse: Tensor  # (B,) the same for the searched code; never above start_mse
    flips: Tensor  # (B,) int64 bits that differ from the starting code
    passes: int  # passes run (fewer than asked when a pass changed nothing)


def reconstruction_mse(model: FlowMo, code: Tensor, images: Tensor, noise: Tensor,
                       decode_kwargs: dict[str, Any]) -> Tensor:
    """code (B, L, C), images and noise (B, 3, H, W) -> (B,) mean squared error of decode(code) to images."""
    recon = model.decode(code, noise=noise, **decode_kwargs)
    return (recon.float() - images.float()).square().flatten(1).mean(1)


def search_evaluations(model: FlowMo, passes: int, **decode_kwargs: Any) -> int:
    """Decoder network evaluations per image of ``passes`` full passes of :func:`search_code` with these decode
    settings (its cost; early stopping can only make it less)."""
    return passes * model.config.bits_per_image * model.decode_evaluations(**decode_kwargs)


def search_code(model: FlowMo, images: Tensor, *, passes: int = 2, code: Tensor | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None, order_seed: int = 0,
                progress: Callable[[int, int], None] | None = None, **decode_kwargs: Any) -> CodeSearchResult:
    """Images (B, 3, H, W) in [-1, 1] -> the encoder's code improved by greedy bit flips.

    Coordinate descent on the sign bits: each pass visits every bit once, in an order drawn from
    ``order_seed``; it flips that bit in every image, decodes, and keeps the flip where the
    reconstruction's MSE to the input falls. The error therefore never rises, and the search stops
    early after a pass that keeps no flip.

    The decoder's starting noise is held fixed during the search: ``noise`` (B, 3, H, W), or drawn
    once from ``generator``. ``decode_kwargs`` (steps, cfg, ...) are the decode settings searched for;
    use the ones the code will be decoded with. ``code``: the starting quantized code (default: the
    encoder's). ``progress(done, total)`` is called after every bit.
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 0:
        raise ValueError(f"passes must be an integer >= 0, got {passes!r}")
    model._check_images(images)
    b, size = images.shape[0], model.config.image_size
    dtype = next(model.parameters()).dtype
    images = images.to(model.device)
    with torch.no_grad():
        if code is None:
            code = model.quantize(model.encode(images)).code
        model._check_code(code)
        if code.shape[0] != b:
            raise ValueError(f"code has {code.shape[0]} rows for {b} images")
        if not code.dtype.is_floating_point or not bool(((code == 1) | (code == -1)).all()):
            raise ValueError("code must be a quantized code, floating point with every entry -1 or +1 "
                             "(model.quantize(...).code)")
        code = code.to(device=model.device, dtype=dtype)
        if noise is None:
            noise = torch.randn(b, 3, size, size, generator=generator, dtype=torch.float32,
                                device=generator.device if generator is not None else model.device)
        elif tuple(noise.shape) != tuple(images.shape):
            raise ValueError(f"noise must have the images' shape {tuple(images.shape)}, got {tuple(noise.shape)}")
        noise = noise.to(model.device)
        start = code = code.detach().clone()
        start_mse = best = reconstruction_mse(model, code, images, noise, decode_kwargs)
        length, channels = code.shape[1:]
        total, done, ran = passes * length * channels, 0, 0
        for pass_index in range(passes):
            order = torch.randperm(length * channels, generator=torch.Generator().manual_seed(order_seed + pass_index))
            kept = 0
            for position in order.tolist():
                token, channel = divmod(position, channels)
                candidate = code.clone()
                candidate[:, token, channel] = -candidate[:, token, channel]
                error = reconstruction_mse(model, candidate, images, noise, decode_kwargs)
                better = error < best
                code = torch.where(better[:, None, None], candidate, code)
                best = torch.where(better, error, best)
                kept += int(better.sum())
                done += 1
                if progress is not None:
                    progress(done, total)
            ran += 1
            if kept == 0:
                break
        if progress is not None and done < total:
            progress(total, total)  # stopped early: nothing is left to do
        flips = (code != start).flatten(1).sum(1)
        indices = model.quantize(code).indices
    return CodeSearchResult(code=code, indices=indices, start_mse=start_mse, mse=best, flips=flips, passes=ran)
