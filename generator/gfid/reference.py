"""The reference set generated samples are compared with: an image folder, FID statistics, or a dataset.

A dataset is exported once, at the generated resolution, into a PNG folder under the cache
directory; later runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from runkit.cli import loader_workers
from runkit.fileio import atomic_write
from runkit.images import tensor_to_uint8

from .shards import jsonable


@dataclass
class Reference:
    """What the generated samples are compared with.

    ``images``: a folder path or a Dataset of uint8 (3, H, W) tensors (needed for PRC/KID and for
    FID without statistics); ``statistics_file``: an .npz with ``mu``/``sigma`` of Inception pool
    features for FID.
    """

    description: str
    images: str | torch.utils.data.Dataset | None = None
    statistics_file: Path | None = None


class _NpzImages(torch.utils.data.Dataset):
    """Images of an ADM-style npz (``arr_0`` N×H×W×3 uint8) as uint8 (3, H, W) tensors."""

    def __init__(self, path: Path):
        self.path = path
        with np.load(path, mmap_mode="r") as data:
            self.length = data["arr_0"].shape[0]
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        if self._array is None:
            self._array = np.load(self.path)["arr_0"]
        return torch.from_numpy(np.ascontiguousarray(self._array[index].transpose(2, 0, 1)))


def default_cache_dir() -> Path:
    """Where dataset references are exported once: ``$XDG_CACHE_HOME/flowmo/gfid`` (~/.cache by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowmo" / "gfid"


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(jsonable(parts), sort_keys=True, default=str).encode()).hexdigest()[:12]


def _folder_fingerprint(folder: Path) -> tuple[int, str]:
    """(number of image files, hash of their names, sizes and mtimes): changes when the folder does."""
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                     if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return len(entries), _fingerprint(entries)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[-40:] or "ref"


def export_dataset_reference(data_cfg: Mapping[str, Any], *, split: str, image_size: int,
                             cache_dir: str | os.PathLike, max_images: int | None = None,
                             show_progress_bar: bool = True) -> Path:
    """Write a dataset (imagedata.build_dataset, eval transform) once as a PNG folder.

    The folder name carries the dataset config, split, resolution and count; a ``COMPLETE`` file
    marks it finished, so an interrupted export starts again and a finished one is reused.
    ``max_images`` takes an evenly spaced subset (deterministic).
    """
    from imagedata import build_dataset  # data loading only when a dataset reference is asked for

    dataset = build_dataset(data_cfg, split, image_size, False)
    total = len(dataset)
    if total == 0:
        raise ValueError(f"reference dataset {dict(data_cfg)} split '{split}' is empty")
    count = total if max_images is None else min(int(max_images), total)
    picks = np.linspace(0, total - 1, count).round().astype(np.int64) if count < total else np.arange(total)
    name = (f"{_slug(str(data_cfg.get('name', 'dataset')))}-{split}-{image_size}px-n{count}-"
            f"{_fingerprint(dict(data_cfg))}")
    folder = Path(cache_dir) / "reference" / name
    marker = folder / "COMPLETE"
    if marker.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, picks.tolist()), batch_size=64,
                                         num_workers=loader_workers(data_cfg.get("num_workers")))
    position = 0
    with tqdm(total=count, desc=f"exporting reference {name}", unit="img", disable=not show_progress_bar) as bar:
        for images, _ in loader:
            for pixels in tensor_to_uint8(images).numpy():
                Image.fromarray(pixels).save(folder / f"{position:07d}.png")
                position += 1
            bar.update(len(images))
    atomic_write(marker, lambda tmp: tmp.write_text(json.dumps({"count": count, "data": jsonable(data_cfg)})))
    return folder


def resolve_reference(reference: str | os.PathLike | Mapping[str, Any], *, image_size: int,
                      cache_dir: str | os.PathLike, split: str = "train",
                      max_reference_images: int | None = None, show_progress_bar: bool = True) -> Reference:
    """Turn the user's ``reference`` into a :class:`Reference`.

    - a folder of images (PNG/JPEG; should already be at the generated resolution);
    - an ``.npz`` with ``mu``/``sigma`` (e.g. the ADM reference batch, whose ``arr_0`` images, when
      present, serve precision/recall and KID);
    - a dataset config mapping (``imagedata.build_dataset``), exported once to a PNG cache.
    """
    if isinstance(reference, Mapping):
        folder = export_dataset_reference(reference, split=split, image_size=image_size, cache_dir=cache_dir,
                                          max_images=max_reference_images, show_progress_bar=show_progress_bar)
        count, _ = _folder_fingerprint(folder)
        return Reference(description=f"dataset {dict(reference)} split {split} ({count} images, {image_size}px)",
                         images=str(folder))
    path = Path(reference)
    if not path.exists():
        raise ValueError(f"reference {path} does not exist (an image folder, an .npz with mu/sigma, or a dataset)")
    if path.is_dir():
        count, _ = _folder_fingerprint(path)
        if count == 0:
            raise ValueError(f"reference folder {path} holds no .png/.jpg/.jpeg images")
        return Reference(description=f"folder {path.resolve()} ({count} images)", images=str(path))
    if path.suffix == ".npz" and path.is_file():
        from evaluation.metrics import load_reference_statistics

        load_reference_statistics(path)  # fail now on a malformed file, not after generation
        with np.load(path, mmap_mode="r") as data:
            has_images = "arr_0" in data.files
        return Reference(description=f"statistics {path.resolve()}" + (" (+ images arr_0)" if has_images else ""),
                         images=_NpzImages(path) if has_images else None, statistics_file=path)
    raise ValueError(f"reference={str(reference)!r} is not an image folder, an existing .npz with mu/sigma, "
                     "or a dataset config")
