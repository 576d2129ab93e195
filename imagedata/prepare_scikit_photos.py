"""Cut the photographs bundled with scikit-image and scikit-learn into an ImageFolder dataset.

    python -m imagedata.prepare_scikit_photos                                  # data/photos, 32 px
    python -m imagedata.prepare_scikit_photos out=/tmp/photos64 image_size=64 train_crops=1000
    python -m imagedata.prepare_scikit_photos include_grey=true                # also the greyscale photos

Writes ``out/train/<photo>/<NNNNNN>.png`` and ``out/val/<photo>/<NNNNNN>.png`` (one class per
photo, the same classes in both), ``out/SOURCES.md`` (origin and licence of every photo) and
``out/manifest.json`` (settings, sources with their sha256 and split geometry, and for every
crop its file, photo, split, box in source pixels and scale). Val crops come from a held-out
band of each photo that no train crop touches (see :mod:`imagedata.scikit_photos`).

Deterministic: the same arguments, photos and Pillow version give byte-identical files; a
rerun finds the existing output up to date and writes nothing. An ``out`` folder that holds
anything other than an earlier output of this command is refused, never overwritten. The
new output is built in a sibling folder and moved into place, so an interrupted run leaves
the previous output (or nothing) behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from runkit.cli import user_path
from runkit.fileio import file_sha256
from runkit.images import load_image

from . import output_folder
from .scikit_photos import (
    GAP_FRACTION,
    MAX_FRACTION,
    MIN_FRACTION,
    MIN_STD,
    VAL_FRACTION,
    PhotoSource,
    crop_rng,
    photo_sources,
    sample_crops,
    split_regions,
)

__all__ = ["GENERATOR", "prepare_photos", "read_manifest"]

GENERATOR = "imagedata.prepare_scikit_photos"
FORMAT = 1
SPLITS = ("train", "val")
OWN_ENTRIES = {"train", "val", "SOURCES.md", "manifest.json"}


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def read_manifest(out: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of an earlier output in ``out``, or None when there is none."""
    return output_folder.read_manifest(out, GENERATOR)


def _listed_files(out: Path) -> set[str]:
    return output_folder.listed_files(out, SPLITS)


def _existing_output(out: Path) -> dict[str, Any] | None:
    """None for a missing or empty ``out``; the manifest of an earlier output; else refuse."""
    return output_folder.earlier_output(out, GENERATOR, OWN_ENTRIES, SPLITS,
                                        lambda manifest: {crop["file"] for crop in manifest.get("crops", [])})


def _sources_markdown(records: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    lines = [
        "# Photographs in this dataset",
        "",
        f"Written by `python -m {GENERATOR}` from photographs bundled with scikit-image and "
        "scikit-learn. One class per photo. Each photo's val crops come from a held-out band "
        f"(the right-most {settings['val_fraction']:.0%} of the width, or the bottom of the height "
        "for a taller-than-wide photo); train crops come from the rest, ending a gap of "
        f"{settings['gap_fraction']:.0%} of that side before the band, so no val pixel is in any train crop. "
        "Boxes and scales of every crop are in manifest.json.",
        "",
        "The crops are derived works of these photographs: keep this file with them "
        "(CC BY 2.0 asks for attribution).",
        "",
        "| class | file | size | what | origin | licence |",
        "|---|---|---|---|---|---|",
    ]
    for record in records:
        cells = [
            record["name"],
            f"`{record['package']}/{record['file']}` ({record['distribution']} {record['package_version']})",
            f"{record['width']}x{record['height']}",
            record["title"],
            record["origin"],
            record["licence"],
        ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _manifest_text(header: dict[str, Any], crops: list[dict[str, Any]]) -> str:
    """Pretty JSON with one line per crop (thousands of crops stay readable and small)."""
    marker = "\"__CROPS__\""
    text = json.dumps({**header, "crops": "__CROPS__"}, indent=2, ensure_ascii=False)
    body = ",\n    ".join(json.dumps(crop, ensure_ascii=False) for crop in crops)
    return text.replace(marker, "[\n    " + body + "\n  ]" if crops else "[]") + "\n"


def _identity(manifest: dict[str, Any]) -> tuple:
    """What decides the bytes of an output: settings, photo contents and the libraries that cut them."""
    return (manifest.get("format"), manifest.get("settings"), manifest.get("pillow"), manifest.get("numpy"),
            [(source.get("name"), source.get("sha256")) for source in manifest.get("sources", [])])


def _install(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``, replacing an earlier output (already checked)."""
    if not out.exists():
        tmp.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)


def prepare_photos(
    out: str | os.PathLike,
    *,
    image_size: int = 32,
    train_crops: int = 600,
    val_crops: int = 40,
    seed: int = 0,
    include_grey: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the photo dataset to ``out`` (see the module docstring); returns the manifest.

    Raises:
        FileExistsError: ``out`` holds something that is not an earlier output of this command.
    """
    for key, value in (("image_size", image_size), ("train_crops", train_crops), ("val_crops", val_crops)):
        if int(value) < 1:
            raise ValueError(f"{key} must be at least 1, got {value}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    out = Path(out).absolute()
    start = time.perf_counter()
    settings = {
        "image_size": int(image_size),
        "train_crops": int(train_crops),
        "val_crops": int(val_crops),
        "seed": int(seed),
        "include_grey": bool(include_grey),
        "val_fraction": VAL_FRACTION,
        "gap_fraction": GAP_FRACTION,
        "min_side_fraction": MIN_FRACTION,
        "max_side_fraction": MAX_FRACTION,
        "min_std": MIN_STD,
        "resample": "crop, then PIL bicubic (antialiased)",
    }
    sources: list[tuple[PhotoSource, Path]] = [(source, source.path) for source in photo_sources(include_grey)]
    records = []
    for source, path in sources:
        records.append({
            "name": source.name,
            "package": source.package,
            "distribution": source.distribution,
            "package_version": _package_version(source.distribution),
            "file": source.file,
            "sha256": file_sha256(path),
            "title": source.title,
            "origin": source.origin,
            "licence": source.licence,
        })
    header: dict[str, Any] = {
        "generator": GENERATOR,
        "format": FORMAT,
        "settings": settings,
        "pillow": _package_version("pillow"),
        "numpy": _package_version("numpy"),
    }

    previous = _existing_output(out)
    if previous is not None and _identity(previous) == _identity({**header, "sources": records}):
        if _listed_files(out) == {crop["file"] for crop in previous["crops"]}:
            log(f"{out} is already up to date ({len(previous['crops'])} crops); nothing written")
            return previous

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    crops: list[dict[str, Any]] = []
    try:
        for (source, path), record in zip(sources, records):
            photo = load_image(path)
            width, height = photo.size
            split = split_regions(width, height)
            short = min(width, height)
            record.update({
                "width": width,
                "height": height,
                "val_band": list(split.val),
                "train_region": list(split.train),
                "band_edge": {"x": "right", "y": "bottom"}[split.axis],
            })
            counts = {}
            for which, count in (("train", train_crops), ("val", val_crops)):
                folder = tmp / which / source.name
                folder.mkdir(parents=True)
                rng = crop_rng(seed, source.name, which)
                for index, (box, crop) in enumerate(sample_crops(photo, split, which, count, image_size, rng)):
                    relative = f"{which}/{source.name}/{index:06d}.png"
                    crop.save(tmp / relative, format="PNG")
                    side = box[2] - box[0]
                    crops.append({
                        "file": relative,
                        "source": source.name,
                        "split": which,
                        "box": list(box),
                        "side": side,
                        "scale": round(side / short, 6),
                    })
                counts[which] = count
            log(f"  {source.name:<22} {width}x{height}: {counts['train']} train, {counts['val']} val "
                f"(val band: {record['band_edge']} {split.val[2] - split.val[0] if split.axis == 'x' else split.val[3] - split.val[1]} px)")
        manifest = {**header, "sources": records, "crops": crops}
        (tmp / "manifest.json").write_text(_manifest_text({**header, "sources": records}, crops), encoding="utf-8")
        (tmp / "SOURCES.md").write_text(_sources_markdown(records, settings), encoding="utf-8")
        _existing_output(out)  # nothing foreign appeared meanwhile
        _install(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    n_train = sum(crop["split"] == "train" for crop in crops)
    log(f"wrote {n_train} train + {len(crops) - n_train} val crops ({image_size}x{image_size} PNG) "
        f"of {len(sources)} photos to {out} in {time.perf_counter() - start:.1f} s")
    return manifest


@hydra.main(version_base="1.3", config_path="../configs", config_name="prepare_photos")
def main(cfg: DictConfig) -> None:
    try:
        prepare_photos(
            user_path(cfg.out),
            image_size=int(cfg.image_size),
            train_crops=int(cfg.train_crops),
            val_crops=int(cfg.val_crops),
            seed=int(cfg.seed),
            include_grey=bool(cfg.include_grey),
        )
    except (FileExistsError, ValueError) as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
