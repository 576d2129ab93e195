"""What one demo request may ask for, and the checks that turn bad input into clear messages.

The limits keep a shared demo responsive (a 2-core laptop or one GPU serving several people);
every one of them is a key of ``configs/app.yaml`` (``limits.max_batch=...``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class DemoLimits:
    max_generator_steps: int = 64  # MaskGIT refinement steps
    max_decode_steps: int = 100  # FlowMo decoder Euler steps
    max_batch: int = 16  # images per generate / token-edit request
    max_image_pixels: int = 40_000_000  # decoded upload size (decompression-bomb guard)
    max_upload_mb: int = 25  # upload file size, enforced by the web server
    max_eval_samples: int = 1_000  # gFID samples per Evaluate request
    max_cfg: float = 20.0
    max_temperature: float = 10.0
    max_prompt_matches: int = 10
    max_search_passes: int = 8  # Reconstruct's token search: each pass is one decode per bit of the code
    max_search_evaluations: int = 10_000  # ... and its decoder evaluations per request (passes x bits x per decode)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "DemoLimits":
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown demo limit(s) {unknown}; known: {sorted(known)}")
        limits = cls(**values)
        for field in dataclasses.fields(cls):
            value = getattr(limits, field.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"limits.{field.name} must be a positive number, got {value!r}")
        return limits


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high], else a ValueError naming the field and the range.

    Floats with an integral value are accepted (web sliders and JSON clients send 8.0 for 8).
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_float(name: str, value: Any, low: float, high: float, low_inclusive: bool = True) -> float:
    """``value`` as a finite float in [low, high] (or (low, high]), else a ValueError."""
    interval = f"{'[' if low_inclusive else '('}{low}, {high}]"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    if number > high or number < low or (not low_inclusive and number == low):
        raise ValueError(f"{name} must be in {interval}, got {number}")
    return number
