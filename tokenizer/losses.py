"""FlowMo training objectives (flowmo.md §3-4): pure functions plus the two stage losses.

Rectified flow with t = 1 noise and t = 0 data: x_t = (1 - t) x + t eps, the decoder predicts
v ~ eps - x. Stage 1A ("mode matching") trains encoder and decoder end to end on the flow
loss; Stage 1B ("mode seeking") backpropagates a perceptual loss through the whole sampler.
Randomness comes from an optional ``torch.Generator`` or torch's global RNG (checkpointed by
:mod:`runkit.rng`), so a resumed run draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from . import quantizer as lfq
from .model import FlowMo
from .sampler import euler_sample, random_time_grid, time_grid

PerceptualFn = Callable[[Tensor, Tensor], Tensor]  # (x, x_hat) in [-1, 1] -> scalar


@dataclass
class LossWeights:
    """Multipliers of every loss term (the release's values are the defaults)."""

    flow: float = 1.0
    perceptual: float = 0.1  # one-step estimate x̂0 vs x (LPIPS-VGG in the release)
    entropy: float = 0.0025
    commitment: float = 0.000625
    sample: float = 0.01  # Stage 1B: perceptual distance of the final sample (ResNet-50 logits)


# ---------------------------------------------------------------------------- pure pieces
def sample_t(batch: int, generator: torch.Generator | None = None, logit_normal_prob: float = 0.9,
             device: torch.device | str | None = None, logit_normal_mean: float = 0.0) -> Tensor:
    """Training times (batch,) in (0, 1): sigmoid(N(mean, 1)) with prob ``logit_normal_prob``, else U(0, 1).

    The release uses mean 0; a positive mean spends more of training near t = 1 (pure noise), where
    the decoder must rebuild the whole image from the code alone.
    """
    if not 0.0 <= logit_normal_prob <= 1.0:
        raise ValueError(f"logit_normal_prob must be in [0, 1], got {logit_normal_prob}")
    logit_normal = torch.sigmoid(torch.randn(batch, generator=generator, device=device) + logit_normal_mean)
    uniform = torch.rand(batch, generator=generator, device=device)
    choose = torch.rand(batch, generator=generator, device=device) < logit_normal_prob
    return torch.where(choose, logit_normal, uniform)


def noisy_input(x: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x + t eps. x, noise (B, 3, H, W); t (B,)."""
    t = t.to(x.dtype)[:, None, None, None]
    return (1 - t) * x + t * noise


def flow_target(x: Tensor, noise: Tensor) -> Tensor:
    """Velocity target eps - x, (B, 3, H, W)."""
    return noise - x


def flow_loss(v_pred: Tensor, x: Tensor, noise: Tensor) -> Tensor:
    """mean((eps - x - v̂)^2) over everything -> scalar (computed in fp32)."""
    return (flow_target(x, noise).float() - v_pred.float()).pow(2).mean()


def one_step_estimate(x_t: Tensor, v_pred: Tensor, t: Tensor) -> Tensor:
    """x̂0 = x_t - t v̂: the data estimate of a single Euler step to t = 0. (B, 3, H, W)."""
    return x_t - t.to(x_t.dtype)[:, None, None, None] * v_pred


def code_keep_mask(batch: int, drop_prob: float, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Tensor:
    """(batch,) bool, False for the samples whose decoder code input is zeroed (CFG training)."""
    if not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"code dropout probability must be in [0, 1), got {drop_prob}")
    return torch.rand(batch, generator=generator, device=device) >= drop_prob


def quantizer_losses(code: Tensor, quantized: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """(entropy, commitment) terms of LFQ for code, quantized (B, L, C) -> two scalars (unweighted)."""
    return lfq.entropy_loss(code, bits), lfq.commitment_loss(code, quantized)


# ---------------------------------------------------------------------------- stage losses
def stage1a_losses(model: FlowMo, images: Tensor, weights: LossWeights, perceptual: PerceptualFn | None = None,
                   code_dropout: float = 0.1, logit_normal_prob: float = 0.9,
                   generator: torch.Generator | None = None,
                   logit_normal_mean: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """The Stage-1A objective on a batch images (B, 3, H, W) in [-1, 1].

    Returns (total scalar with graph, detached terms for logging). ``perceptual`` scores the
    one-step estimate x̂0 against x; None skips that term.
    """
    code = model.encode(images)
    total, terms = flow_matching_losses(model, images, code, model.quantize(code).code, weights, perceptual,
                                        code_dropout, logit_normal_prob, generator, logit_normal_mean)
    return total, terms


def flow_matching_losses(model: FlowMo, images: Tensor, code: Tensor, quantized: Tensor, weights: LossWeights,
                         perceptual: PerceptualFn | None = None, code_dropout: float = 0.1,
                         logit_normal_prob: float = 0.9,
                         generator: torch.Generator | None = None,
                         logit_normal_mean: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Flow + one-step perceptual + LFQ terms given the encoder's code and its quantization (B, L, C)."""
    b, device = images.shape[0], images.device
    entropy, commitment = quantizer_losses(code, quantized, model.config.lfq_bits)
    t = sample_t(b, generator, logit_normal_prob, device, logit_normal_mean)
    noise = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
    x_t = noisy_input(images, noise, t)
    keep = code_keep_mask(b, code_dropout, generator, device)
    v_pred = model.velocity_from_input(x_t, model.decoder_code_input(quantized, keep=keep), t)
    flow = flow_loss(v_pred, images, noise)

    total = weights.flow * flow + weights.entropy * entropy + weights.commitment * commitment
    terms = {"flow": flow, "entropy": entropy, "commitment": commitment}
    if perceptual is not None and weights.perceptual:
        perc = perceptual(images, one_step_estimate(x_t, v_pred, t)).float()
        total = total + weights.perceptual * perc
        terms["perceptual"] = perc
    terms = {k: v.detach() for k, v in terms.items()}
    terms["loss"] = total.detach()
    return total, terms


def sample_through_sampler(model: FlowMo, code_in: Tensor, noise: Tensor, timesteps: Tensor, cfg: float = 1.0,
                           checkpoint: bool = True) -> Tensor:
    """Euler-sample x̂ (B, 3, H, W) from noise keeping the graph, for a loss on the final sample.

    code_in: decoder input (B, L, C+1); timesteps (B, K+1) descending 1 -> 0. With ``checkpoint``
    each decoder call is recomputed in backward, so memory holds only the K+1 states z_k
    instead of K sets of transformer activations: flat in K up to those small tensors.
    """
    def checkpointed_velocity(z: Tensor, c: Tensor, t: Tensor) -> Tensor:
        return torch.utils.checkpoint.checkpoint(model.velocity_from_input, z, c, t, use_reentrant=False)

    velocity = checkpointed_velocity if checkpoint else model.velocity_from_input
    return euler_sample(velocity, code_in, noise, timesteps, cfg=cfg, cfg_interval=None)


def stage1b_losses(model: FlowMo, images: Tensor, weights: LossWeights, sample_perceptual: PerceptualFn,
                   perceptual: PerceptualFn | None = None, sample_steps: int = 8, sample_cfg: float = 1.0,
                   sample_grid: str = "random",
                   checkpoint: bool = True, code_dropout: float = 0.1, logit_normal_prob: float = 0.9,
                   generator: torch.Generator | None = None,
                   logit_normal_mean: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """The Stage-1B objective: sample-level perceptual loss through a K-step random-grid sampler,
    plus the Stage-1A loss as a co-training regulariser. images (B, 3, H, W) -> (total, terms).

    ``sample_grid`` "random" draws a fresh grid per image (the paper); a schedule name such as
    "pow_0.25" trains through the fixed grid the decoder will be sampled with at that step count.

    The encoder is expected frozen (its parameters without grad), as in the paper.
    """
    code = model.encode(images)  # no graph when the encoder is frozen
    quantized = model.quantize(code).code
    total, terms = flow_matching_losses(model, images, code, quantized, weights, perceptual, code_dropout,
                                        logit_normal_prob, generator, logit_normal_mean)
    b, device = images.shape[0], images.device
    noise = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
    if sample_grid == "random":
        grid = random_time_grid(sample_steps, b, generator=generator, device=device)
    else:
        grid = time_grid(sample_steps, sample_grid, device).expand(b, -1)
    sample = sample_through_sampler(model, model.decoder_code_input(quantized), noise, grid, sample_cfg, checkpoint)
    sample_loss = sample_perceptual(images, sample.clamp(-1, 1)).float()
    total = total + weights.sample * sample_loss
    terms["sample"] = sample_loss.detach()
    terms["loss"] = total.detach()
    return total, terms


def freeze(module: nn.Module) -> None:
    """Stop training ``module``: no grads, and any stale grads dropped."""
    for p in module.parameters():
        p.requires_grad_(False)
        p.grad = None
