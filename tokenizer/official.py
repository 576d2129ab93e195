"""The authors' released checkpoint layout, in one place.

A released ``.pth`` is ``{"total_steps": int, "model_ema_state_dict": {...},
"model_state_dict": {...}}``. Our modules carry the released tensor names, so the name map
is the identity except for wrappers that training tools add (``module.`` from DDP,
``_orig_mod.`` from torch.compile), which are stripped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

CHECKPOINT_KEYS = {"ema": "model_ema_state_dict", "raw": "model_state_dict"}
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def map_official_name(name: str) -> str:
    """Released tensor name -> our parameter name."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
        name = name.replace("._orig_mod.", ".")
    return name


def extract_state_dict(checkpoint: Mapping, weights: str = "ema", source: str = "checkpoint") -> dict[str, Tensor]:
    """Pick the EMA (default) or raw weights out of a released checkpoint dict, or pass a plain
    state dict through."""
    if weights not in CHECKPOINT_KEYS:
        raise ValueError(f"weights must be one of {sorted(CHECKPOINT_KEYS)}, got {weights!r}")
    if any(key in checkpoint for key in CHECKPOINT_KEYS.values()):
        key = CHECKPOINT_KEYS[weights]
        if key not in checkpoint:
            raise KeyError(f"{source} has no {key!r} (it has {sorted(checkpoint)}); "
                           f"try weights={'raw' if weights == 'ema' else 'ema'!r}")
        checkpoint = checkpoint[key]
    return {map_official_name(k): v for k, v in checkpoint.items() if isinstance(v, Tensor)}


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Raise a clear error naming every missing / unexpected key and every shape mismatch."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {expected[k]}"
                   for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatches ({len(wrong_shape)}): {_preview(wrong_shape)}")
    if problems:
        raise ValueError(f"{source} does not match this FlowMo config — " + "; ".join(problems)
                         + ". Is the config right (e.g. flowmo_lo vs flowmo_hi)?")


def load_official_state_dict(path_or_state_dict: str | os.PathLike | Mapping, model: nn.Module,
                             weights: str = "ema", map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read (safely) and validate a released checkpoint for ``model``; returns our state dict."""
    if isinstance(path_or_state_dict, Mapping):
        checkpoint, source = path_or_state_dict, "state dict"
    else:
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"FlowMo checkpoint {path} not found. Download the released "
                                    "flowmo_lo.pth / flowmo_hi.pth and pass its local path.")
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        source = str(path)
    state = extract_state_dict(checkpoint, weights=weights, source=source)
    check_state_dict(model, state, source=source)
    return state


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
