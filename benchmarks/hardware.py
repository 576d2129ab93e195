"""The hardware line every benchmark table starts with (imported by the scripts beside it)."""

from __future__ import annotations

import platform

import torch


def describe(device: torch.device | str | None = None) -> str:
    """GPU name and CUDA version, or CPU model and thread count, plus the torch version."""
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads, torch {torch.__version__}"
