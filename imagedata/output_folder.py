"""The output folder of a dataset-preparing command: its manifest, and the refusal to write into a
folder that holds anything the command did not write (so a typo in ``out`` never clobbers data)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def read_manifest(out: str | os.PathLike, generator: str) -> dict[str, Any] | None:
    """``out/manifest.json`` when ``generator`` wrote it, else None."""
    try:
        manifest = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == generator else None


def listed_files(out: Path, splits: Iterable[str]) -> set[str]:
    """Every file under the split folders of ``out``, as posix paths relative to ``out``."""
    return {path.relative_to(out).as_posix() for split in splits if (out / split).is_dir()
            for path in (out / split).rglob("*") if not path.is_dir()}


def earlier_output(out: Path, generator: str, own_entries: set[str], splits: Iterable[str],
                   recorded_files: Callable[[dict[str, Any]], set[str]]) -> dict[str, Any] | None:
    """None for a missing or empty ``out``; the manifest of an earlier output of ``generator`` whose
    files are all its own (``recorded_files(manifest)``); anything else raises FileExistsError."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise FileExistsError(f"out={out} exists and is not a folder")
    entries = sorted(entry.name for entry in out.iterdir())
    if not entries:
        return None
    manifest = read_manifest(out, generator)
    foreign = [name for name in entries if name not in own_entries]
    if manifest is not None and not foreign:
        foreign = sorted(listed_files(out, splits) - recorded_files(manifest))
        if not foreign:
            return manifest
    if manifest is None:
        reason, names = "it has no manifest.json of this command and holds", entries
    else:
        reason, names = "it holds files this command did not write:", foreign
    listing = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise FileExistsError(f"out={out} is not empty and is not an earlier output of {generator} ({reason} "
                          f"{listing}); pass another out= or empty that folder first")
