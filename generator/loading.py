"""One entry point for every way a generator is stored on disk."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from runkit.checkpoint import CHECKPOINTS_DIR, STEP_PREFIX, latest_step_dir
from runkit.pretrained import CONFIG_FILE

from .base import GeneratorModel


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GeneratorModel:
    """Load a MaskGIT or ARTransformer from a ``save_pretrained`` directory or a training run
    directory (its latest complete ``checkpoints/step_*/``, which holds the EMA weights in that format)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"generator checkpoint {path} not found (expected a directory with {CONFIG_FILE} "
                                f"or a training run with {CHECKPOINTS_DIR}/{STEP_PREFIX}*)")
    if not (path / CONFIG_FILE).is_file():
        step_dir = latest_step_dir(path, marker=CONFIG_FILE)
        if step_dir is None:
            raise FileNotFoundError(f"{path} is neither a saved generator ({CONFIG_FILE} + weights) nor a training "
                                    f"run with complete {CHECKPOINTS_DIR}/{STEP_PREFIX}* directories")
        path = step_dir
    model = GeneratorModel.from_pretrained(path, map_location=map_location)
    return model.eval()
