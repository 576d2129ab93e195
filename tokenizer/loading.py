"""One entry point for every way a FlowMo tokenizer is stored on disk."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from runkit.checkpoint import CHECKPOINTS_DIR, STEP_PREFIX, latest_step_dir
from runkit.pretrained import CONFIG_FILE

from .config import FlowMoConfig
from .model import FlowMo


def load_flowmo(path: str | os.PathLike, config: FlowMoConfig | str | None = None, weights: str = "ema",
                map_location: str | torch.device = "cpu") -> FlowMo:
    """Load a tokenizer from any of:

    - a directory written by ``save_pretrained`` (``config.json`` + ``model.safetensors``),
      which is also what every training checkpoint ``run/checkpoints/step_N/`` holds (EMA weights);
    - a training run directory (its latest checkpoint);
    - a released ``.pth`` file (``config`` names its preset, e.g. ``"flowmo_lo"``).
    """
    path = Path(path)
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return FlowMo.from_pretrained(path, map_location=map_location)
        step_dir = latest_step_dir(path, marker=CONFIG_FILE)
        if step_dir is None:
            raise FileNotFoundError(f"{path} is neither a saved FlowMo ({CONFIG_FILE} + weights) nor a training "
                                    f"run with complete {CHECKPOINTS_DIR}/{STEP_PREFIX}* directories")
        return FlowMo.from_pretrained(step_dir, map_location=map_location)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer checkpoint {path} not found")
    if config is None:
        raise ValueError(f"{path} looks like a released FlowMo checkpoint: say which config it has "
                         "(e.g. config='flowmo_lo' or 'flowmo_hi')")
    return FlowMo.from_official(path, config, weights=weights, map_location=map_location)
