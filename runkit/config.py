"""Config dataclasses from plain dicts (JSON records, resolved Hydra groups)."""

from __future__ import annotations

import dataclasses
from typing import Any


def dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """``cls(**data)`` for a config dataclass, naming unknown keys (a typo in a config file) clearly."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {unknown}; known: {sorted(known)}")
    return cls(**data)
