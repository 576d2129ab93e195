"""DemoSettings: everything about the demo that is not a model (device, dtype, limits, metric backbones, paths)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from runkit.cli import resolve_device

from .domains import DEFAULT_DOMAINS, DomainSpec
from .limits import DemoLimits

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class DemoSettings:
    """Everything about the demo that is not a model: devices, limits, metric backbones."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16 | float16 (CUDA only)
    compile: bool | str = "auto"  # auto (off: a request is one short batch) | true: compiled in the background | false
    limits: DemoLimits = field(default_factory=DemoLimits)
    lpips_net: str = "alex"  # alex | vgg
    lpips_weights: str | None = None  # torchvision backbone .pth for LPIPS; None: LPIPS unavailable
    allow_random_lpips: bool = False  # random backbone: LPIPS shown, marked UNCALIBRATED
    inception_weights: str | None = None  # torch-fidelity Inception .pth for gFID
    allow_random_inception: bool = True  # without a classifier or weights: random Inception, numbers UNCALIBRATED
    # Evaluate's feature space (auto | inception | classifier) and classifier directory; auto with no
    # directory: the domain's classifier (digits, emoji) when it is there, else Inception-v3
    features: str = "auto"
    feature_classifier: str | None = None
    eval_reference: str | None = None  # folder of real images or reference-statistics .npz; None: the domain's data
    eval_reference_split: str = "val"  # split of a dataset reference (the digits and emoji held-out images)
    eval_max_reference_images: int | None = None
    work_dir: str | None = None  # evaluation outputs, prompt vocabularies; None: a temporary directory
    model_dirs: tuple[str, ...] = ()  # the only places DemoPipeline.reload (the model picker) loads from
    domain: str = "digits"  # the embedded domain the demo opens with (app.domains): digits | emoji
    domains: Mapping[str, DomainSpec] = field(default_factory=lambda: dict(DEFAULT_DOMAINS))  # every domain known

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {sorted(DTYPES)}")
        if self.dtype == "float16" and self.torch_device().type != "cuda":
            raise ValueError("dtype=float16 needs a CUDA device; use float32 or bfloat16 on CPU")
        return DTYPES[self.dtype]
