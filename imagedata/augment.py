"""Batch augmentation on tensors: small random affine jitter (the generator's token jitter, the classifier)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

BLACK = -1.0  # the jitter fill of a dataset that names no ``background``


def background_of(dataset: object) -> float:
    """The pixel value ``dataset`` jitters with: its ``background`` attribute, black for one that has none
    (a user's own dataset class)."""
    return float(getattr(dataset, "background", BLACK))


def random_affine(images: Tensor, generator: torch.Generator, max_degrees: float = 10.0,
                  max_scale: float = 0.1, max_shift: float = 0.08, hflip: bool = False,
                  fill: float = BLACK) -> Tensor:
    """Small random rotation, scale and shift (and optional horizontal flip) per image; (B,3,H,W) -> same.

    Shifts are fractions of the image side. Pixels moved in from outside get ``fill``: the dataset's
    background (:func:`background_of`: -1 black for digits, +1 white for emoji), so a jittered
    image shows no border a real one never has.
    """
    batch = images.shape[0]

    def uniform(scale: float) -> Tensor:
        return (torch.rand(batch, generator=generator) * 2 - 1) * scale

    angle = uniform(math.radians(max_degrees))
    scale = 1.0 + uniform(max_scale)
    flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0) if hflip else torch.ones(batch)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(2 * max_shift)], 1),
                         torch.stack([sin * flip, cos, uniform(2 * max_shift)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images - fill, grid, align_corners=False, padding_mode="zeros") + fill
