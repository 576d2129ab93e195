"""The files of one gFID run: its recorded plan, the finished shards and their PNGs.

A shard is done exactly when its ``.npz`` exists; it is written atomically after the PNGs, so a
killed run leaves nothing that looks finished but is not.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from runkit.fileio import atomic_write

from .plan import SamplePlan

PLAN_FILE = "plan.json"
REPORT_FILE = "report.json"
GRID_FILE = "grid.png"
SHARDS_DIR = "shards"
IMAGES_DIR = "images"
SAMPLES_NPZ_GLOB = "samples_*x*x*x3.npz"  # samples_{N}x{H}x{W}x3.npz, the ADM layout


def jsonable(value: Any) -> Any:
    """Settings as plain JSON (tuples, paths, numpy scalars)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, os.PathLike):
        return str(value)
    return value


class ShardStore:
    """The shard files of one run directory; a shard is done when its ``.npz`` exists."""

    def __init__(self, out_dir: str | os.PathLike, plan: SamplePlan, save_png: bool = True):
        self.out_dir = Path(out_dir)
        self.plan = plan
        self.save_png = save_png
        self.shards_dir = self.out_dir / SHARDS_DIR
        self.images_dir = self.out_dir / IMAGES_DIR

    def shard_path(self, shard: int) -> Path:
        return self.shards_dir / f"shard_{shard:05d}.npz"

    def png_path(self, index: int, label: int) -> Path:
        return self.images_dir / f"{index:07d}_class{label:04d}.png"

    def is_done(self, shard: int) -> bool:
        return self.shard_path(shard).is_file()

    def done_shards(self) -> list[int]:
        return [k for k in range(self.plan.num_shards) if self.is_done(k)]

    def check_plan(self, settings: Mapping[str, Any], overwrite: bool = False) -> None:
        """Record the plan + settings, or refuse to resume a run made with different ones."""
        record = {"plan": asdict(self.plan), "settings": jsonable(settings)}
        path = self.out_dir / PLAN_FILE
        if path.is_file() and not overwrite:
            previous = json.loads(path.read_text())
            requested = json.loads(json.dumps(record))
            changed = sorted(f"{group}.{key}" for group in ("plan", "settings")
                             for key in set(previous.get(group, {})) | set(requested[group])
                             if previous.get(group, {}).get(key) != requested[group].get(key))
            if changed:
                raise ValueError(
                    f"{path} was written by a run with different settings ({', '.join(changed)} differ): its "
                    "shards cannot be mixed with this run. Use a new out_dir, or pass overwrite=true to "
                    f"discard them.\nrecorded: {previous}\nrequested: {requested}")
            return
        if overwrite:
            self.clear()
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))

    def clear(self) -> None:
        """Delete everything a run writes here (plan, shards, PNGs, npz, grid, report); other files stay."""
        for folder in (self.shards_dir, self.images_dir):
            if folder.is_dir():
                shutil.rmtree(folder)
        for name in (PLAN_FILE, REPORT_FILE, GRID_FILE):
            (self.out_dir / name).unlink(missing_ok=True)
        for npz in self.out_dir.glob(SAMPLES_NPZ_GLOB):
            npz.unlink()

    def write(self, shard: int, images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
              seeds: np.ndarray, tokens: np.ndarray | None = None) -> None:
        """Write one finished shard: PNGs first, then the ``.npz`` that marks it done."""
        if self.save_png:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            for image, label, index in zip(images, labels, indices):
                # No fsync per PNG: the shard is only "done" once the npz below lands, and an
                # unfinished shard rewrites all of its PNGs on resume.
                Image.fromarray(image).save(self.png_path(int(index), int(label)))

        def write_npz(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                extra = {"tokens": tokens} if tokens is not None else {}
                np.savez(handle, images=images, labels=labels, indices=indices, seeds=seeds, **extra)

        atomic_write(self.shard_path(shard), write_npz)

    def read(self, shard: int) -> dict[str, np.ndarray]:
        with np.load(self.shard_path(shard)) as data:
            return {key: data[key] for key in data.files}

    def read_all(self) -> dict[str, np.ndarray]:
        """Every shard's arrays concatenated in sample order (``tokens`` only when every shard has them)."""
        shards = [self.read(k) for k in range(self.plan.num_shards)]
        keys = set.intersection(*(set(shard) for shard in shards))
        return {key: np.concatenate([shard[key] for shard in shards]) for key in keys}

    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the stored samples; every shard must agree."""
        shapes = set()
        for shard in range(self.plan.num_shards):
            with np.load(self.shard_path(shard)) as data:
                shapes.add(data["images"].shape[1:3])
        if len(shapes) != 1:
            raise ValueError(f"shards in {self.shards_dir} hold images of different sizes {sorted(shapes)}")
        return shapes.pop()


class ShardImages(torch.utils.data.Dataset):
    """All finished shards as torch-fidelity input: item ``i`` is sample ``i`` as uint8 (3, H, W)."""

    def __init__(self, store: ShardStore):
        self.store = store
        self._cached: tuple[int, np.ndarray] | None = None  # last shard read (access is sequential)

    def __len__(self) -> int:
        return self.store.plan.num_samples

    def __getitem__(self, index: int) -> Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard, offset = divmod(index, self.store.plan.shard_size)
        if self._cached is None or self._cached[0] != shard:
            self._cached = (shard, self.store.read(shard)["images"])
        return torch.from_numpy(np.ascontiguousarray(self._cached[1][offset].transpose(2, 0, 1)))
