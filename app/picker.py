"""The model picker's loading: client-typed paths confined to ``settings.model_dirs``, and a failed
load that frees what it built (the UI's picker is off unless ``model_picker=true``)."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from .models import DEFAULT_WEIGHTS_DIR, LoadedModels, load_models
from .settings import DemoSettings


def picker_path(value: str | None, option: str, model_dirs: tuple[str, ...]) -> Path | None:
    """A picker path confined to ``model_dirs`` (relative: to the first of them); None when empty.

    A refused path gets one message whether it exists or not.
    """
    if value in (None, "") or not str(value).strip():
        return None
    roots = [Path(d).expanduser().resolve() for d in model_dirs]
    refusal = ValueError(f"{option}: the model picker only loads checkpoints under "
                         + (", ".join(map(str, roots)) if roots else "no directory (model_dirs is empty)"))
    if not roots:
        raise refusal
    try:
        path = (roots[0] / str(value).strip()).resolve()  # an absolute value replaces roots[0]
    except (OSError, RuntimeError):  # e.g. a symlink loop: refused like any outside path
        raise refusal from None
    if not any(path.is_relative_to(root) for root in roots):
        raise refusal
    return path


def load_picked(settings: DemoSettings, tokenizer: str | None = None, tokenizer_preset: str | None = None,
                maskgit: str | None = None, ar: str | None = None,
                weights_dir: str | Path = DEFAULT_WEIGHTS_DIR) -> LoadedModels:
    """The main model set the picker asks for, every path checked before anything is built; empty paths:
    the embedded models. No extra tokenizer: they do not depend on the main set, so the caller keeps its own."""
    paths = [picker_path(value, option, settings.model_dirs) for value, option in
             ((tokenizer, "FlowMo checkpoint"), (maskgit, "MaskGIT checkpoint"), (ar, "AR checkpoint"))]
    try:
        return load_models(paths[0], tokenizer_preset, paths[1], paths[2], photo_tokenizer=False,
                           weights_dir=weights_dir, settings=settings)
    except Exception as error:  # noqa: BLE001 - re-raised below, without the frames that hold the models
        failure = error
    # The traceback's frames reference the half-loaded models (GBs for FlowMo-Lo): drop them.
    failure.__traceback__ = failure.__context__ = failure.__cause__ = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise failure
