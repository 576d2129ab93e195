"""Checks of one request's inputs against the loaded models and :class:`~app.limits.DemoLimits`.

Bad input raises ``ValueError`` with a message meant for the person at the browser; settings left
None come from the models' saved defaults.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from .limits import DemoLimits, check_float, check_int
from .models import LoadedModels


def check_seed(seed: Any) -> int:
    """A sampling seed: an int any torch.Generator takes."""
    return check_int("seed", seed, 0, 2**63 - 1)


def resolve_classes(models: LoadedModels, classes: Sequence[int | str] | None) -> list[int]:
    """Class ids from ids or names (the UI's multi-select sends names), checked against the model."""
    names = models.class_names
    if not models.generators:
        raise ValueError("no generator is loaded: load a MaskGIT or AR checkpoint to generate")
    if isinstance(classes, (str, int)):
        classes = [classes]
    if not classes:
        raise ValueError("select at least one class (or type a prompt and press Match)")
    ids = []
    for item in classes:
        if isinstance(item, str) and not item.strip().lstrip("-").isdigit():
            if item not in names:
                raise ValueError(f"unknown class {item!r}; this model has {len(names)} classes, "
                                 f"e.g. {', '.join(names[:5])}")
            ids.append(names.index(item))
        else:
            ids.append(check_int("class id", item, 0, len(names) - 1))
    return ids


def check_generate(models: LoadedModels, limits: DemoLimits, generator: str, steps: Any, cfg: Any,
                   temperature: Any) -> tuple[int, float, float]:
    """Generator steps, CFG and temperature, unset ones (None) from the generator's saved defaults."""
    steps, cfg, temperature = (saved if value is None else value for value, saved in
                               zip((steps, cfg, temperature), models.generator_defaults(generator)))
    return (check_int("generator steps", steps, 1, limits.max_generator_steps),
            check_float("generator CFG", cfg, 0.0, limits.max_cfg),
            check_float("temperature", temperature, 0.0, limits.max_temperature, low_inclusive=False))


def check_decode(limits: DemoLimits, tokenizer: Any, steps: Any, cfg: Any) -> tuple[int, float]:
    """Decoder steps and CFG, unset ones (None) from the tokenizer's saved defaults."""
    settings = tokenizer.decode_settings(steps, cfg)
    return (check_int("decoder steps", settings["steps"], 1, limits.max_decode_steps),
            check_float("decoder CFG", settings["cfg"], 0.0, limits.max_cfg))


def image_tensor(limits: DemoLimits, tokenizer: Any, image: Any, name: str, notes: list[str] | None = None) -> Tensor:
    """A path / bytes / PIL image -> (1, 3, S, S) in [-1, 1] on the tokenizer's device, as the public pipeline
    prepares it (messages name the file, not where the server keeps its uploads), within
    ``limits.max_image_pixels``; what was done to the picture on the way (transparency flattened on white)
    is appended to ``notes``."""
    from generator.pipeline import Pipeline

    if image is None or (isinstance(image, str) and not image.strip()):
        raise ValueError(f"{name}: upload an image or pick an example")
    return Pipeline(None, tokenizer).image_tensor(image, max_pixels=limits.max_image_pixels, name=name, notes=notes)
