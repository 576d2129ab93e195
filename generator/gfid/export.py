"""A finished run in the forms other tools read: the ADM evaluation npz and a labelled sample grid."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from runkit.fileio import atomic_write
from runkit.images import save_image_grid

from .plan import classes_for_samples
from .shards import ShardStore


def write_adm_npz(store: ShardStore, path: str | os.PathLike) -> Path:
    """Stream all shards into one ``.npz``: ``arr_0`` uint8 N×H×W×3 and ``arr_1`` int64 labels.

    The ADM evaluation suite (guided-diffusion's evaluator.py) reads this layout. Written shard by
    shard into the zip, so memory stays at one shard even for 50,000 images at 256 px.
    """
    plan = store.plan
    height, width = store.image_shape()
    labels = classes_for_samples(np.arange(plan.num_samples), plan.num_classes)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("arr_0.npy", "w", force_zip64=True) as member:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                          "shape": (plan.num_samples, height, width, 3)}
                np.lib.format.write_array_header_2_0(member, header)
                for shard in range(plan.num_shards):
                    member.write(np.ascontiguousarray(store.read(shard)["images"]).tobytes())
            with archive.open("arr_1.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, labels)

    return atomic_write(path, write)


def write_sample_grid(store: ShardStore, path: str | os.PathLike, class_names: Sequence[str] | None = None,
                      max_images: int = 64) -> Path:
    """The first ``max_images`` samples (one per class first, by the round-robin plan), labelled."""
    first = store.read(0)
    count = min(max_images, len(first["images"]))
    images = torch.from_numpy(first["images"][:count]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    labels = [class_names[int(c)] if class_names is not None else str(int(c)) for c in first["labels"][:count]]
    save_image_grid(images, path, nrow=min(8, count), labels=labels)
    return Path(path)
