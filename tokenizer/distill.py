"""Few-step decoding: post-training a FlowMo decoder to sample in K <= 4 network evaluations.

The encoder is frozen, so the tokens, and every generator and token cache built on them, stay
valid; only the decoder learns. The student starts from the teacher's weights and is trained
through the exact K-step Euler sampler it will decode with (no guidance, so no unconditional
pass), gradients flowing through every step. Two targets for the K-step sample x̂, mixed by
weight (benchmarks/few_step_decoding.md compares them):

- ``data``: the image itself, d(x̂, x). The sampler regresses onto the posterior mean of the
  image given its tokens: the distortion-optimal decoder at this step count.
- ``teacher``: the teacher's own many-step guided sample from the same noise, d(x̂, x̃). This
  is knowledge distillation of the sampler (Luhman & Luhman 2021): the student learns the
  teacher's noise-to-image map, sharpness and guidance included.

``d`` is the sample-level distance of Stage 1B (pixel MSE, LPIPS or ResNet-50 logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .losses import LossWeights, PerceptualFn, flow_matching_losses, sample_through_sampler
from .model import FlowMo
from .sampler import time_grid

TARGETS = ("data", "teacher")


@dataclass
class DistillSettings:
    """The student's sampler, the teacher's sampler, and the weight of each target."""

    steps: int = 2  # student Euler steps = decoder evaluations per image
    schedule: str = "pow_0.25"  # student time grid, the one it is then decoded with
    data_weight: float = 1.0
    teacher_weight: float = 0.0
    teacher_steps: int = 25
    teacher_cfg: float = 1.5
    teacher_schedule: str = "pow_0.25"
    teacher_cfg_interval: tuple[float, float] | None = (0.17, 1.02)  # EDM sigma, as the release decodes

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"distill.steps must be a positive integer, got {self.steps!r}")
        if self.data_weight < 0 or self.teacher_weight < 0 or self.data_weight + self.teacher_weight == 0:
            raise ValueError(f"distill.data_weight ({self.data_weight}) and distill.teacher_weight "
                             f"({self.teacher_weight}) must be >= 0 and not both 0")
        if self.teacher_cfg_interval is not None:
            self.teacher_cfg_interval = tuple(float(v) for v in self.teacher_cfg_interval)
        time_grid(self.steps, self.schedule)
        time_grid(self.teacher_steps, self.teacher_schedule)

    @property
    def needs_teacher(self) -> bool:
        return self.teacher_weight > 0


@torch.no_grad()
def teacher_samples(teacher: FlowMo, code: Tensor, noise: Tensor, settings: DistillSettings) -> Tensor:
    """The teacher's guided many-step samples x̃ (B, 3, H, W) in [-1, 1] of quantized code (B, L, C) from noise."""
    return teacher.decode(code, steps=settings.teacher_steps, cfg=settings.teacher_cfg,
                          schedule=settings.teacher_schedule, cfg_interval=settings.teacher_cfg_interval, noise=noise)


def distill_losses(student: FlowMo, images: Tensor, settings: DistillSettings, distance: PerceptualFn,
                   teacher: FlowMo | None = None, weights: LossWeights | None = None,
                   perceptual: PerceptualFn | None = None, code_dropout: float = 0.1,
                   logit_normal_prob: float = 0.9, logit_normal_mean: float = 0.0, checkpoint: bool = True,
                   generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The few-step objective on images (B, 3, H, W) in [-1, 1] -> (total with graph, detached terms).

    ``weights.flow`` > 0 adds the Stage-1A flow loss as a co-training regulariser (as Stage 1B
    does), which keeps the decoder a velocity field at every t; 0 trains only the K-step map.
    The student's encoder must be frozen: the tokens never change.
    """
    if settings.needs_teacher and teacher is None:
        raise ValueError("distill.teacher_weight > 0 needs the teacher model")
    code = student.encode(images)
    quantized = student.quantize(code).code
    total = images.new_zeros((), dtype=torch.float32)
    terms: dict[str, Tensor] = {}
    if weights is not None and weights.flow > 0:
        total, terms = flow_matching_losses(student, images, code, quantized, weights, perceptual, code_dropout,
                                            logit_normal_prob, generator, logit_normal_mean)
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    code_in = student.decoder_code_input(quantized.detach())
    grid = time_grid(settings.steps, settings.schedule, images.device).expand(images.shape[0], -1)
    sample = sample_through_sampler(student, code_in, noise, grid, cfg=1.0, checkpoint=checkpoint).clamp(-1, 1)
    if settings.data_weight > 0:
        data = distance(images, sample).float()
        total = total + settings.data_weight * data
        terms["distill_data"] = data.detach()
    if settings.needs_teacher:
        target = teacher_samples(teacher, quantized.detach(), noise, settings)
        match = distance(target, sample).float()
        total = total + settings.teacher_weight * match
        terms["distill_teacher"] = match.detach()
    terms["loss"] = total.detach()
    return total, terms
