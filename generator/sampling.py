"""Sampling math shared by the generators: masking schedule, confidence selection, filtering, guidance.

Pure functions on tensors. Every random draw at generation time takes a ``RandomSource``: None
(torch's global RNG), one ``torch.Generator``, or one generator per batch row, in which case row b
draws only from generator b, so a sample does not depend on the batch it was generated in
(what the gFID harness needs for results independent of batch size and process count).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor

RandomSource = Union[torch.Generator, Sequence[torch.Generator], None]

GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")


def cosine_mask_fraction(r: Tensor | float) -> Tensor | float:
    """Fraction of positions still masked at progress r in [0, 1]: cos(pi r / 2) (1 -> 0)."""
    if isinstance(r, Tensor):
        return torch.cos(math.pi / 2 * r)
    return math.cos(math.pi / 2 * r)


def training_mask(batch: int, seq_len: int, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> Tensor:
    """MaskGIT training mask (B, N) bool: per row r ~ U(0,1) and ceil(cos(pi r/2) N) random positions masked."""
    r = torch.rand(batch, device=device, generator=generator)
    counts = torch.ceil(cosine_mask_fraction(r) * seq_len).long().clamp(1, seq_len)
    ranks = torch.rand(batch, seq_len, device=device, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


def masked_after_step(step: int, num_steps: int, seq_len: int) -> int:
    """How many positions stay masked after sampling step ``step`` (0-based) of ``num_steps``."""
    return math.floor(seq_len * cosine_mask_fraction((step + 1) / num_steps))


def guidance_scale(step: int, num_steps: int, scale: float, schedule: str = "constant") -> float:
    """Guidance scale at ``step``: constant s, or rising from 1 to s linearly or along a half cosine."""
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance schedule {schedule!r} is unknown; choose one of {list(GUIDANCE_SCHEDULES)}")
    progress = (step + 1) / num_steps
    if schedule == "linear":
        return 1.0 + (scale - 1.0) * progress
    if schedule == "cosine":
        return 1.0 + (scale - 1.0) * (1.0 - math.cos(math.pi * progress)) / 2.0
    return scale


def apply_guidance(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance on logits: u + s (c - u)."""
    return uncond + scale * (cond - uncond)


def remove_label_smoothing(logits: Tensor, label_smoothing: float) -> Tensor:
    """Logits (..., V) of a model trained with label smoothing eps -> logits of the distribution it smoothed.

    Fitted to smoothed targets, a model predicts q = (1 - eps) p + eps / V: every token, however wrong,
    keeps eps / V, so a draw from q is one of those tokens eps (V - 1) / V of the time (10 % at eps 0.1).
    MaskGIT needs a mode-seeking choice order or guidance to throw them out again, which makes its samples
    alike (benchmarks/generator_quality.md). This returns log max(q - eps / V, 0): p up to normalisation,
    -inf for tokens that sit on the floor. Exact without guidance; under guidance it removes the guided
    distribution's floor. The most likely token always stays (q_max >= 1 / V > eps / V).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if label_smoothing == 0.0:
        return logits
    floor = label_smoothing / logits.shape[-1]
    probs = logits.float().softmax(dim=-1)
    # A token on the floor comes out of softmax a rounding error above it, not at it: 1e-4 of slack.
    return torch.where(probs > floor * (1 + 1e-4), probs - floor, 0.0).log()


def uniform(shape: torch.Size | tuple[int, ...], device: torch.device | str, generator: RandomSource = None) -> Tensor:
    """U[0, 1) of ``shape`` (B, ...); with a list of B generators row b comes from generator b alone."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, device=device, generator=generator)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]} rows: give one per row")
    return torch.stack([torch.rand(tuple(shape[1:]), generator=g, device=g.device) for g in generator]).to(device)


def gumbel_noise(shape: torch.Size | tuple[int, ...], device: torch.device | str,
                 generator: RandomSource = None) -> Tensor:
    u = uniform(shape, device, generator).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set logits (..., V) outside the top-k and outside the top-p nucleus to -inf (the best one always stays)."""
    if top_k is not None and top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_from_logits(logits: Tensor, temperature: float = 1.0, generator: RandomSource = None) -> Tensor:
    """One categorical draw per row of logits (..., V) at ``temperature`` (0 -> argmax); returns int64 (...).

    Inverse-CDF sampling with one uniform number per row, drawn through :func:`uniform`.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    cdf = (logits.float() / temperature).softmax(dim=-1).cumsum(dim=-1)
    u = uniform(cdf.shape[:-1], cdf.device, generator)
    # right=True never lands on a zero-probability token (its CDF step is flat).
    picked = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1), right=True).squeeze(-1)
    return picked.clamp_max(cdf.shape[-1] - 1)


def sample_top_k_top_p(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                       generator: RandomSource = None) -> Tensor:
    """Temperature first, then the top-k / top-p filters on the tempered distribution, then one draw.

    logits (..., V) -> int64 (...). Tempering before filtering (as LlamaGen does) makes the
    nucleus the one of the distribution actually sampled from; temperature 0 is argmax.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    return sample_from_logits(filter_logits(logits.float() / temperature, top_k, top_p), 1.0, generator)


def select_to_remask(log_confidence: Tensor, still_masked: Tensor, num_to_mask: int, choice_temperature: float,
                     generator: RandomSource = None) -> Tensor:
    """MaskGIT confidence selection: which positions (B, N) bool to mask again for the next step.

    Confidence = log p(sampled token) + choice_temperature * Gumbel noise; positions decided in
    earlier steps are never re-masked. The ``num_to_mask`` least confident masked positions are chosen.
    """
    if num_to_mask <= 0:
        return torch.zeros_like(still_masked)
    noise = gumbel_noise(log_confidence.shape, log_confidence.device, generator)
    confidence = log_confidence.float() + choice_temperature * noise
    confidence = confidence.masked_fill(~still_masked, float("inf"))
    lowest = confidence.topk(num_to_mask, dim=-1, largest=False).indices
    return torch.zeros_like(still_masked).scatter(-1, lowest, True)
