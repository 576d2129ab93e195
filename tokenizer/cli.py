"""What every entry point needs from its command line: user paths, the run folder, the device.

Hydra's runs keep the launch directory as the working directory (``chdir: false``), but
``to_absolute_path`` is still the one documented way to read a user's relative path; outside
Hydra (tests, Python callers) paths are taken as given.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def hydra_running() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def user_path(path: str | os.PathLike) -> Path:
    """A path as the user typed it: relative to the launch directory when Hydra runs."""
    if hydra_running():
        from hydra.utils import to_absolute_path

        return Path(to_absolute_path(str(path)))
    return Path(path).expanduser()


def output_directory(explicit: str | os.PathLike | None, option: str) -> Path:
    """``explicit`` if given, else Hydra's run folder; outside Hydra the option is required."""
    if explicit:
        return user_path(explicit)
    if hydra_running():
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    raise ValueError(f"{option} is not set and Hydra is not running: pass {option}=<folder>")


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available; use device=cpu")
    return device


MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


def resolve_mixed_precision(name: str, cpu: bool = False) -> str:
    """accelerate's ``mixed_precision`` for a config value: ``auto`` is bf16 when the run will use
    CUDA (and ``cpu`` does not force the CPU), else ``no``; ``no``, ``bf16`` and ``fp16`` pass through."""
    if name not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision={name!r}; choose one of {list(MIXED_PRECISION)}")
    if name == "auto":
        return "bf16" if torch.cuda.is_available() and not cpu else "no"
    return name
