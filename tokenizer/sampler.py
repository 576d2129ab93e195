"""Rectified-flow sampling for the FlowMo decoder: time grids and the Euler loop with CFG.

Time runs from t = 1 (noise) to t = 0 (data); the model answers the velocity v = eps - x.
The sampler is a set of free functions that take a velocity callable, so the same loop serves
inference, Stage 1B (random grids, graph kept) and tests.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor | None, Tensor], Tensor]  # (z, code or None, t) -> v


def parse_schedule(schedule: str) -> tuple[str, float]:
    """'linear' -> ('pow', 1.0); 'pow_0.25' -> ('pow', 0.25). Anything else is an error."""
    if schedule == "linear":
        return "pow", 1.0
    if schedule.startswith("pow_"):
        try:
            p = float(schedule[4:])
        except ValueError:
            p = -1.0
        if p > 0:
            return "pow", p
    raise ValueError(f"unknown sampling schedule {schedule!r}: use 'linear' or 'pow_<p>' with p > 0 (e.g. 'pow_0.25')")


def time_grid(steps: int, schedule: str = "pow_0.25", device: torch.device | None = None) -> Tensor:
    """Descending times (steps + 1,) from 1 to 0: t_k = (k / steps)^(1/p) for 'pow_p'.

    'pow_0.25' gives (k/N)^4, crowding steps near t = 0 (the shifted sampler of the paper).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    _, p = parse_schedule(schedule)
    k = torch.arange(steps, -1, -1, dtype=torch.float64, device=device)
    return (k / steps).pow(1.0 / p).float()


def random_time_grid(steps: int, batch: int, generator: torch.Generator | None = None,
                     device: torch.device | None = None) -> Tensor:
    """Random descending grids for Stage 1B: (batch, steps + 1) from 1 to 0.

    steps uniform increments, cumulatively summed and normalised, so every grid starts at
    exactly 1 and ends at exactly 0.
    """
    increments = torch.rand(batch, steps, generator=generator, device=device)
    cumulative = torch.cat([torch.zeros(batch, 1, device=device), increments.cumsum(-1)], dim=-1)
    return 1.0 - cumulative / cumulative[:, -1:]


def sigma_to_t(sigma: float) -> float:
    """EDM noise level sigma -> rectified-flow time t = sigma / (1 + sigma)."""
    return sigma / (1.0 + sigma)


def cfg_active(t: Tensor, cfg_interval: tuple[float, float] | None) -> Tensor:
    """Per-sample mask of where guidance applies at times t (B,); the interval is in EDM sigma."""
    if cfg_interval is None:
        return torch.ones_like(t, dtype=torch.bool)
    lo, hi = (sigma_to_t(s) for s in cfg_interval)
    return (t >= lo) & (t <= hi)


def guided_velocity(velocity: VelocityFn, z: Tensor, code: Tensor, t: Tensor, cfg: float, active: Tensor) -> Tensor:
    """v_u + cfg (v_c - v_u) where ``active`` (B,), else v_c; both branches in one batched call."""
    v = velocity(torch.cat([z, z]), torch.cat([code, torch.zeros_like(code)]), torch.cat([t, t]))
    v_cond, v_uncond = v.chunk(2)
    guided = v_uncond + cfg * (v_cond - v_uncond)
    return torch.where(active[:, None, None, None], guided, v_cond)


def network_evaluations(timesteps: Tensor, cfg: float = 1.0, cfg_interval: tuple[float, float] | None = None) -> int:
    """Decoder calls per image of :func:`euler_sample` on the grid ``timesteps`` (K + 1,).

    One call per step, plus one unconditional call at every step where guidance is active.
    """
    t = timesteps[:-1]
    guided = int(cfg_active(t, cfg_interval).sum()) if cfg != 1.0 else 0
    return int(t.numel()) + guided


def euler_sample(velocity: VelocityFn, code: Tensor, noise: Tensor, timesteps: Tensor, cfg: float = 1.0,
                 cfg_interval: tuple[float, float] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Euler integration z <- z - (t_k - t_{k+1}) v from noise at t = 1 to t = 0.

    code: decoder code (B, L, C) (the unconditional branch gets zeros); noise: (B, 3, H, W);
    timesteps: (K + 1,) shared or (B, K + 1) per sample, descending. Returns unclipped z.
    The graph is kept if grad is enabled (Stage 1B backpropagates through the loop).
    """
    z = noise
    grid = timesteps if timesteps.dim() == 2 else timesteps.expand(noise.shape[0], -1)
    grid = grid.to(noise.device)
    n_steps = grid.shape[1] - 1
    for k in range(n_steps):
        t, t_next = grid[:, k], grid[:, k + 1]
        active = cfg_active(t, cfg_interval)
        if cfg != 1.0 and bool(active.any()):
            v = guided_velocity(velocity, z, code, t, cfg, active)
        else:
            v = velocity(z, code, t)
        z = z - (t - t_next).to(z.dtype)[:, None, None, None] * v
        if progress is not None:
            progress(k + 1, n_steps)
    return z
