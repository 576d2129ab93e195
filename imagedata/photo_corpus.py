"""A corpus of real photographs taken from the image files that ship inside Debian packages.

    python -m imagedata.photo_corpus /work/corpus/photos
    python -m imagedata.photo_corpus out/ --packages lomiri-wallpapers-16.04 opencv-doc --unseen opencv-doc

Each package is fetched without installing it (:mod:`imagedata.debian`), its image files
(``IMAGE_SUFFIXES``; inside ``INCLUDE_GLOBS`` and outside ``EXCLUDE_GLOBS`` where a package
has them) are decoded with Pillow, and then, in this order:

1. unreadable files and symbolic links are skipped, with the reason recorded;
2. non-photographs are rejected by :func:`non_photo_reason` (its rule is in its docstring);
3. the same picture at several resolutions or crops is found with a perceptual hash
   (:func:`find_duplicates`); the largest copy is kept, the others are recorded with what they
   duplicate;
4. every kept file gets a split **by file**: all files of the ``unseen`` package go to
   ``test_unseen``; the others to ``val`` when the first 64 bits of their sha256, read as a
   fraction of 2**64, are below ``val_fraction``, else to ``train``. Deduplication runs over
   all packages first, so one picture is never in two splits.

Output (``out``)::

    train/<package>/<path in the package, below the folder all its images share>
    val/<package>/...
    test_unseen/<package>/...
    manifest.json   every kept file (package, version, path, licence, sha256, size, split),
                    every rejected and duplicate file with its reason, the settings
    SOURCES.md      one section per package: version, licence, its files

Files are copied byte for byte (so the sha256 in the manifest is that of the copy, and no
JPEG is inflated into a PNG); :class:`imagedata.ImageFolderDataset` reads the split
folders with the package as the class. The build is deterministic and idempotent: a rerun
with the same inputs finds the manifest unchanged and writes nothing. An ``out`` that holds
anything other than an earlier output of this builder is refused.

Packages reserved for independent evaluation (``RESERVED_PACKAGES``, and any name containing
``fluent``) are refused before anything is fetched. When apt is missing, or every package
fails, the corpus is built from the photographs bundled with scikit-image and scikit-learn
instead (:data:`imagedata.scikit_photos.COLOUR_SOURCES`, with their licences); otherwise those
photographs join the packages' as two more sources (``bundled=False`` / ``--no-bundled`` leaves them out).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import fft, ndimage

from runkit.fileio import atomic_write, file_sha256
from runkit.images import ImageDecodeError, load_image

from . import output_folder
from .debian import AptUnavailableError, DebianFetchError, fetch_package, file_licences

__all__ = [
    "GENERATOR",
    "DEFAULT_PACKAGES",
    "DEFAULT_UNSEEN",
    "RESERVED_PACKAGES",
    "INCLUDE_GLOBS",
    "EXCLUDE_GLOBS",
    "check_not_reserved",
    "photo_measures",
    "non_photo_reason",
    "list_images",
    "perceptual_hash",
    "crop_to_aspect",
    "find_duplicates",
    "split_of",
    "build_photo_corpus",
    "read_manifest",
    "sources_markdown",
]

GENERATOR = "imagedata.photo_corpus"
FORMAT = 1
DEFAULT_PACKAGES = (
    "plasma-workspace-wallpapers",
    "lomiri-wallpapers",
    "lomiri-wallpapers-16.04",   # the photographs: lomiri-wallpapers itself only depends on these two
    "lomiri-wallpapers-20.04",
    "gnome-backgrounds",
    "opencv-doc",
    "stellarium-data",
)
DEFAULT_UNSEEN = "opencv-doc"
RESERVED_PACKAGES = ("mate-backgrounds", "ukui-wallpapers")
RESERVED_SUBSTRING = "fluent"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
# Wallpapers of plasma-workspace-wallpapers 5.27 that are photographs, by inspection. The others
# (Altai, Autumn, Canopee, Flow, Honeywave, Kokkini, Patak, SafeLanding, Shell, Volna, ...) are digital
# paintings and 3-D renders; the flat ones fail non_photo_reason, but those with painted or
# rendered grain pass it, since they are as noisy as a JPEG photograph.
PLASMA_PHOTOGRAPHS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
                      "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")
# fnmatch patterns on the path inside the package (a * also crosses "/"); a package not listed
# contributes all its image files.
INCLUDE_GLOBS: dict[str, tuple[str, ...]] = {
    "plasma-workspace-wallpapers": tuple(f"usr/share/wallpapers/{name}/contents/images/*"
                                         for name in PLASMA_PHOTOGRAPHS),
    # gnome-backgrounds 43 ships renders and vector art only (no photograph since GNOME 42); its
    # grainy renders (adwaita, licorice, pixels) pass non_photo_reason, so none of it is taken.
    "gnome-backgrounds": (),
    # Its samples' input pictures; opencv4/html holds the manual's figures (diagrams, plots, screenshots).
    "opencv-doc": ("usr/share/doc/opencv-doc/examples/*",),
    # Landscape panoramas and nebula photographs; skycultures/ are constellation drawings, textures/
    # planet maps and interface art.
    "stellarium-data": ("usr/share/stellarium/landscapes/*", "usr/share/stellarium/nebulae/*"),
}
# Files left out although the include globs match them: synthetic test pictures, drawings and
# paintings that pass non_photo_reason because noise was added to them or they are painted.
EXCLUDE_GLOBS: dict[str, tuple[str, ...]] = {
    "opencv-doc": tuple(f"usr/share/doc/opencv-doc/examples/{pattern}" for pattern in (
        "alphamat/output_mattes/*", "alphamat/trimaps/*",    # computed mattes
        "fuzzy/*",                                            # a drawing with added noise, and masks
        "data/pic[1-6].png", "data/ellipses.jpg",             # shapes under synthetic noise
        "data/imageText*.png",                                # a text page with synthetic noise
        "data/ml.png", "data/smarties.png",                   # 3-D renders
        "data/starry_night.jpg",                              # Van Gogh's painting
    )),
}
MAX_PIXELS = 120_000_000     # decompression-bomb guard; the largest wallpaper here is ~20 Mpx

# The non-photograph rule (see non_photo_reason).
MIN_SIDE = 256
MIN_UNCLIPPED = 0.05
MAX_ZERO_RESIDUAL = 0.5
DETAIL_SIDE = 256
DETAIL_LEVEL = 2.0
MIN_DETAIL = 0.005

# The duplicate rule (see find_duplicates).
HASH_SIDE = 16               # 16 x 16 lowest DCT frequencies = 256 bits
HASH_INPUT = 64              # of a 64 x 64 greyscale copy
HASH_WORKING_SIDE = 256      # crops are cut from a copy with this short side
MAX_HASH_DISTANCE = 24       # of 256 bits: true copies measured <= 20, distinct pictures >= 32
CROP_POSITIONS = (0.0, 0.5, 1.0)

SPLITS = ("train", "val", "test_unseen")
OWN_ENTRIES = {*SPLITS, "manifest.json", "SOURCES.md"}


@dataclass(frozen=True)
class Source:
    """A package whose image files feed the corpus: where its files are and what they are licensed under."""

    name: str
    version: str
    origin: str                  # "debian", "scikit-image" or "scikit-learn"
    licence: str                 # the package's
    root: Path
    files: tuple[str, ...]       # paths inside root, sorted
    licences: dict[str, str]     # path -> licence, for every file


@dataclass
class Candidate:
    """An image that passed the photograph rule, waiting for deduplication."""

    source: Source
    path: str
    sha256: str
    width: int
    height: int
    working: np.ndarray          # greyscale, short side HASH_WORKING_SIDE (or less), for the hashes


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_not_reserved(name: str) -> None:
    """Refuse a package kept out of every corpus so that it can serve as an independent evaluation set."""
    if name in RESERVED_PACKAGES or RESERVED_SUBSTRING in name:
        raise ValueError(
            f"package {name!r} is reserved for independent evaluation (reserved: {', '.join(RESERVED_PACKAGES)} "
            f"and any name containing {RESERVED_SUBSTRING!r}); it is never fetched or used for training"
        )


def _included(package: str, path: str) -> bool:
    globs = INCLUDE_GLOBS.get(package)
    if globs is not None and not any(fnmatch.fnmatchcase(path, glob) for glob in globs):
        return False
    return not any(fnmatch.fnmatchcase(path, glob) for glob in EXCLUDE_GLOBS.get(package, ()))


def list_images(root: Path, package: str) -> list[str]:
    """Paths (inside ``root``) of the package's image files and links to them, sorted."""
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and (path.is_symlink() or path.is_file())
        and _included(package, path.relative_to(root).as_posix())
    )


def _shrink(img: Image.Image, side: int) -> Image.Image:
    """``img`` box-filtered so its short side is ``side`` (never enlarged)."""
    width, height = img.size
    scale = side / min(width, height)
    if scale >= 1:
        return img
    return img.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX)


def photo_measures(img: Image.Image) -> dict[str, float]:
    """The three numbers :func:`non_photo_reason` decides on (all fractions in [0, 1]).

    ``unclipped``: pixels whose 3x3 greyscale neighbourhood holds neither 0 nor 255.
    ``zero_residual``: among those, the pixels where Immerkaer's noise operator
    ``[[1,-2,1],[-2,4,-2],[1,-2,1]]`` is exactly 0 at full resolution (it is 0 on flat fills,
    linear ramps and straight edges; sensor noise and fine texture make it non-zero).
    ``detail``: pixels of a copy box-filtered to a ``DETAIL_SIDE`` short side that differ from
    their 3x3 mean by at least ``DETAIL_LEVEL`` grey levels.
    """
    grey = np.asarray(img.convert("L"), dtype=np.int32)
    clipped = (grey == 0) | (grey == 255)
    unclipped = ~ndimage.maximum_filter(clipped, size=3, mode="nearest")[1:-1, 1:-1]
    second_x = grey[:, :-2] - 2 * grey[:, 1:-1] + grey[:, 2:]
    residual = second_x[:-2] - 2 * second_x[1:-1] + second_x[2:]
    count = int(unclipped.sum())
    zero = float((residual[unclipped] == 0).sum() / count) if count else 1.0
    small = np.asarray(_shrink(img, DETAIL_SIDE).convert("L"), dtype=np.float64)
    detail = float((np.abs(small - ndimage.uniform_filter(small, size=3, mode="nearest")) >= DETAIL_LEVEL).mean())
    return {"unclipped": count / unclipped.size if unclipped.size else 0.0, "zero_residual": zero, "detail": detail}


def non_photo_reason(img: Image.Image) -> str | None:
    """Why ``img`` is not taken for a photograph, or None when it is.

    The rule, in order:

    1. the short side is below ``MIN_SIDE`` (256) px: too small to be worth a training file;
    2. fewer than ``MIN_UNCLIPPED`` (5 %) of the pixels are unclipped (see
       :func:`photo_measures`): a mask, line art or an empty black frame;
    3. ``MAX_ZERO_RESIDUAL`` (50 %) or more of the unclipped pixels have a zero noise residual
       at full resolution: flat fills and smooth shading, i.e. vector art, a clean render or a
       gradient. A photograph's sensor noise and texture make the residual non-zero almost
       everywhere (8-45 % zeros for the wallpaper photographs measured). Its blind spots:
       a JPEG saved at quality 75 or below loses the noise of a smooth sky and can fail it, as
       can an astronomical picture whose sky was flattened to a near-black constant, and
       digital paintings and renders with painted or rendered grain pass it;
    4. under ``MIN_DETAIL`` (0.5 %) of the pixels of a 256-px copy stand out from their 3x3
       mean by 2 grey levels: a smooth gradient, whose rounding steps slip past rule 3.

    Clipped pixels (pure black or white) are left out of rule 3 so that astronomical pictures
    with a black sky and over-exposed highlights are judged on their unclipped part.
    """
    width, height = img.size
    if min(width, height) < MIN_SIDE:
        return f"smaller than {MIN_SIDE} px on the short side ({width}x{height})"
    measures = photo_measures(img)
    if measures["unclipped"] < MIN_UNCLIPPED:
        return (f"only {measures['unclipped']:.1%} of the pixels are neither pure black nor pure white "
                f"(under {MIN_UNCLIPPED:.0%}): a mask, line art or an empty frame")
    if measures["zero_residual"] >= MAX_ZERO_RESIDUAL:
        return (f"{measures['zero_residual']:.0%} of the pixels have no noise or texture (at least "
                f"{MAX_ZERO_RESIDUAL:.0%}): flat fills or smooth shading, i.e. vector art, a render or a gradient")
    if measures["detail"] < MIN_DETAIL:
        return (f"only {measures['detail']:.2%} of the pixels show detail at {DETAIL_SIDE} px (under "
                f"{MIN_DETAIL:.1%}): a smooth gradient")
    return None


def crop_to_aspect(grey: np.ndarray, aspect: float, position: float) -> np.ndarray:
    """The largest crop of ``grey`` (H x W) whose width / height is ``aspect``; ``position`` in [0, 1]
    places it along the side that is cut (0: left or top, 0.5: centred, 1: right or bottom)."""
    height, width = grey.shape
    if width / height > aspect:
        keep = max(1, round(height * aspect))
        left = round((width - keep) * position)
        return grey[:, left:left + keep]
    keep = max(1, round(width / aspect))
    top = round((height - keep) * position)
    return grey[top:top + keep]


def perceptual_hash(grey: np.ndarray) -> np.ndarray:
    """256-bit DCT hash of a greyscale picture: the signs, against their median, of the 16 x 16
    lowest 2-D DCT frequencies of a 64 x 64 box-filtered copy. Resizing, re-encoding and
    brightness changes move few bits; a different picture differs in about half."""
    small = Image.fromarray(grey.astype(np.uint8)).resize((HASH_INPUT, HASH_INPUT), Image.Resampling.BOX)
    coefficients = fft.dctn(np.asarray(small, dtype=np.float64), norm="ortho")[:HASH_SIDE, :HASH_SIDE].ravel()
    return coefficients > np.median(coefficients)


def _aspect(width: int, height: int) -> float:
    return round(width / height, 2)


def find_duplicates(candidates: Sequence[Candidate], unseen: str | None) -> dict[int, tuple[int, int]]:
    """Index of every duplicate -> (index of the copy kept instead, Hamming distance to it).

    Two images are the same picture when, for either of them, a crop of the other one to its
    aspect ratio (at the start, the centre or the end of the side cut, ``CROP_POSITIONS``) hashes
    (:func:`perceptual_hash`) within ``MAX_HASH_DISTANCE`` bits of its own hash: a wallpaper
    shipped at 16:9 and 16:10, or as a portrait cut, is a crop of one picture. Groups are closed
    transitively. Each group keeps one copy: the ``unseen``
    package's when it has one (so that package stays complete), else the one with the most
    pixels; ties go to the first (package, path).
    """
    aspects = sorted({_aspect(c.width, c.height) for c in candidates})
    bits = HASH_SIDE * HASH_SIDE
    own = np.array([perceptual_hash(c.working) for c in candidates], dtype=np.int64).reshape(len(candidates), bits)
    distance = np.full((len(candidates), len(candidates)), bits + 1, dtype=np.int64)
    for aspect in aspects:
        members = [index for index, c in enumerate(candidates) if _aspect(c.width, c.height) == aspect]
        mine = own[members]
        for position in CROP_POSITIONS:
            # Every image cropped to this aspect against the members' own hashes; XOR counts via dot products.
            cropped = np.array([perceptual_hash(crop_to_aspect(c.working, aspect, position)) for c in candidates],
                               dtype=np.int64).reshape(len(candidates), bits)
            differing = cropped.sum(1)[:, None] + mine.sum(1)[None, :] - 2 * cropped @ mine.T
            distance[:, members] = np.minimum(distance[:, members], differing)
    distance = np.minimum(distance, distance.T)
    np.fill_diagonal(distance, bits + 1)

    parent = list(range(len(candidates)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for a, b in zip(*np.nonzero(distance <= MAX_HASH_DISTANCE)):
        parent[root(int(a))] = root(int(b))
    groups: dict[int, list[int]] = {}
    for index in range(len(candidates)):
        groups.setdefault(root(index), []).append(index)

    def preference(index: int) -> tuple:
        c = candidates[index]
        return (c.source.name != unseen, -c.width * c.height, c.source.name, c.path)

    duplicates = {}
    for members in groups.values():
        kept = min(members, key=preference)
        for index in members:
            if index != kept:
                duplicates[index] = (kept, int(distance[index, kept]))
    return duplicates


def split_of(sha256: str, package: str, unseen: str | None, val_fraction: float) -> str:
    """The split of one file: ``test_unseen`` for the unseen package, else val/train by its sha256."""
    if package == unseen:
        return "test_unseen"
    return "val" if int(sha256[:16], 16) / 2**64 < val_fraction else "train"


def _common_folder(paths: Sequence[str]) -> str:
    """The folder (with a trailing /) that all ``paths`` share, or ''."""
    folders = [path.split("/")[:-1] for path in paths]
    shared: list[str] = []
    for parts in zip(*folders):
        if len(set(parts)) != 1:
            break
        shared.append(parts[0])
    return "/".join(shared) + "/" if shared else ""


def _scan(source: Source, log: Callable[[str], None]) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Decode every file of ``source``: photographs become candidates, the rest rejections."""
    candidates, rejected = [], []
    for relative in source.files:
        path = source.root / relative
        if path.is_symlink():
            # A link inside the package points at a file listed on its own; one outside it is not its content.
            rejected.append({"package": source.name, "path": relative, "stage": "link",
                             "reason": f"symbolic link to {os.readlink(path)}, not a file of its own"})
            continue
        try:
            img = load_image(path, max_pixels=MAX_PIXELS, name=f"{source.name}:{relative}")
        except ImageDecodeError as error:
            rejected.append({"package": source.name, "path": relative, "stage": "unreadable", "reason": str(error)})
            continue
        reason = non_photo_reason(img)
        if reason is not None:
            rejected.append({"package": source.name, "path": relative, "stage": "non_photo", "reason": reason})
            continue
        working = np.asarray(_shrink(img, HASH_WORKING_SIDE).convert("L"))
        candidates.append(Candidate(source, relative, file_sha256(path), img.width, img.height, working))
    log(f"  {source.name}: {len(source.files)} image files, {len(candidates)} look like photographs")
    return candidates, rejected


def _debian_sources(packages: Sequence[str], cache_dir: str | os.PathLike | None,
                    log: Callable[[str], None]) -> tuple[list[Source], list[dict[str, str]]]:
    """Fetch each package; the ones that fail are returned with their error instead."""
    sources, failures = [], []
    for name in packages:
        try:
            package = fetch_package(name, cache_dir)
        except DebianFetchError as error:
            log(f"  {name}: skipped, {error}")
            failures.append({"name": name, "error": str(error)})
            continue
        files = list_images(package.root, name)
        sources.append(Source(name, package.version, "debian", package.licence, package.root, tuple(files),
                              file_licences(package, files)))
        log(f"  {name} {package.version}: {package.licence}")
    return sources, failures


def _bundled_sources() -> list[Source]:
    """The photographs that ship with scikit-image and scikit-learn, one Source per library."""
    from .scikit_photos import COLOUR_SOURCES

    sources = []
    for origin in ("scikit-image", "scikit-learn"):
        photos = [photo for photo in COLOUR_SOURCES if photo.distribution == origin]
        root = photos[0].path.parents[len(Path(photos[0].file).parts) - 1]
        sources.append(Source(origin, _package_version(origin) or "unknown", origin,
                              "per file (see each file's licence)", root, tuple(sorted(photo.file for photo in photos)),
                              {photo.file: photo.licence for photo in photos}))
    return sources


def _by_path(record: dict[str, Any]) -> tuple[str, str]:
    return record["package"], record["path"]


def _plan(sources: Sequence[Source], unseen: str | None, val_fraction: float,
          log: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept files, rejected files, duplicates) over all ``sources``, each sorted by package and path."""
    candidates: list[Candidate] = []
    rejected: list[dict[str, Any]] = []
    for source in sources:
        found, refused = _scan(source, log)
        candidates.extend(found)
        rejected.extend(refused)
    duplicates = find_duplicates(candidates, unseen)
    prefixes = {source.name: _common_folder(source.files) for source in sources}
    kept, dropped = [], []
    for index, c in enumerate(candidates):
        record = {"package": c.source.name, "version": c.source.version, "origin": c.source.origin,
                  "path": c.path, "licence": c.source.licences[c.path], "sha256": c.sha256,
                  "width": c.width, "height": c.height}
        if index in duplicates:
            original, distance = duplicates[index]
            dropped.append({**record, "duplicate_of": f"{candidates[original].source.name}:{candidates[original].path}",
                            "hash_distance": distance})
            continue
        split = split_of(c.sha256, c.source.name, unseen, val_fraction)
        name = c.path[len(prefixes[c.source.name]):]
        kept.append({"file": f"{split}/{c.source.name}/{name}", **record, "split": split,
                     "bytes": (c.source.root / c.path).stat().st_size})
    return sorted(kept, key=_by_path), sorted(rejected, key=_by_path), sorted(dropped, key=_by_path)


def _package_records(sources: Sequence[Source], kept: list, rejected: list, dropped: list) -> list[dict[str, Any]]:
    records = []
    for source in sources:
        def count(items: list, stage: str | None = None) -> int:
            return sum(item["package"] == source.name and (stage is None or item["stage"] == stage) for item in items)

        records.append({
            "name": source.name, "version": source.version, "origin": source.origin, "licence": source.licence,
            "found": len(source.files), "links": count(rejected, "link"), "unreadable": count(rejected, "unreadable"),
            "non_photo": count(rejected, "non_photo"), "duplicates": count(dropped), "kept": count(kept),
        })
    return records


def read_manifest(out: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of an earlier output of this builder in ``out``, or None."""
    return output_folder.read_manifest(out, GENERATOR)


def _listed_files(out: Path) -> set[str]:
    return output_folder.listed_files(out, SPLITS)


def _earlier_output(out: Path) -> dict[str, Any] | None:
    """None for a missing or empty ``out``; the manifest of an earlier output; anything else is refused."""
    return output_folder.earlier_output(out, GENERATOR, OWN_ENTRIES, SPLITS,
                                        lambda manifest: {record["file"] for record in manifest.get("files", [])})


def _up_to_date(out: Path, previous: dict[str, Any] | None, manifest: dict[str, Any]) -> bool:
    """The earlier output has this manifest and all its files, at the recorded sizes."""
    if previous is None or previous != json.loads(json.dumps(manifest)):
        return False
    return _listed_files(out) == {record["file"] for record in manifest["files"]} and all(
        (out / record["file"]).stat().st_size == record["bytes"] for record in manifest["files"])


def sources_markdown(manifest: dict[str, Any]) -> str:
    """SOURCES.md: what the corpus is made of, one section per package."""
    settings = manifest["settings"]
    lines = [
        "# Photographs in this corpus",
        "",
        f"Written by `python -m {GENERATOR}`. Files are copied unchanged from the packages below "
        f"(origin: {manifest['origin']}). Splits are by file: "
        + (f"`test_unseen` holds every kept file of `{settings['unseen']}`; the rest go to " if settings["unseen"]
           else "each goes to ")
        + f"`val` (about {settings['val_fraction']:.0%}, chosen by sha256) or `train`. "
        "manifest.json also lists the rejected and duplicate files with their reasons.",
        "",
        "Keep this file with the images: most licences below ask for attribution.",
    ]
    if manifest["failed_packages"]:
        lines += ["", "Packages that could not be fetched: " + "; ".join(
            f"`{failure['name']}` ({failure['error']})" for failure in manifest["failed_packages"])]
    for package in manifest["packages"]:
        files = [record for record in manifest["files"] if record["package"] == package["name"]]
        lines += [
            "",
            f"## {package['name']} {package['version']}",
            "",
            f"- origin: {package['origin']}; licence: {package['licence']}",
            f"- {package['found']} image files: {package['links']} links, {package['unreadable']} unreadable, "
            f"{package['non_photo']} not photographs, {package['duplicates']} duplicates, {package['kept']} kept",
        ]
        if files:
            lines += ["", "| file | path in the package | size | licence |", "|---|---|---|---|"]
            lines += [f"| `{record['file']}` | `{record['path']}` | {record['width']}x{record['height']} | "
                      f"{record['licence'].replace('|', '/')} |" for record in files]
    return "\n".join(lines) + "\n"


def _install(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``, replacing an earlier output (already checked)."""
    if out.exists() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
        return
    if out.exists():
        out.rmdir()
    tmp.rename(out)


def _write(out: Path, manifest: dict[str, Any], roots: dict[str, Path]) -> None:
    """Copy the kept files and write manifest.json and SOURCES.md into a sibling folder, then swap it in."""
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for record in manifest["files"]:
            target = tmp / record["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(roots[record["package"]] / record["path"], target)
        text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
        atomic_write(tmp / "manifest.json", lambda path: path.write_text(text, encoding="utf-8"))
        markdown = sources_markdown(manifest)
        atomic_write(tmp / "SOURCES.md", lambda path: path.write_text(markdown, encoding="utf-8"))
        _earlier_output(out)   # nothing foreign appeared meanwhile
        _install(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def build_photo_corpus(
    out: str | os.PathLike,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    unseen: str | None = DEFAULT_UNSEEN,
    cache_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.15,
    *,
    bundled: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build the corpus in ``out`` (see the module docstring) and return its manifest.

    ``unseen`` names the package held out whole as ``test_unseen`` (None: no such split); it
    must be one of ``packages``. ``cache_dir`` is where packages are downloaded and unpacked
    (default ``~/.cache/flowmo/debian``). ``bundled``: also take the photographs that ship with
    scikit-image and scikit-learn, as two more sources split like the packages (they are
    everyday subjects, people, animals, food, that the Debian packages have few of).

    Raises:
        ValueError: a reserved package, ``unseen`` not among ``packages``, a bad ``val_fraction``.
        FileExistsError: ``out`` holds something that is not an earlier output of this builder.
    """
    packages = tuple(dict.fromkeys(packages))
    for name in packages:
        check_not_reserved(name)
    if unseen is not None and unseen not in packages:
        raise ValueError(f"unseen={unseen!r} is not among the packages ({', '.join(packages)})")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = Path(out).expanduser().absolute()
    previous = _earlier_output(out)   # refuse a foreign folder before any download

    log(f"fetching {len(packages)} Debian packages")
    try:
        sources, failures = _debian_sources(packages, cache_dir, log)
    except AptUnavailableError as error:
        log(f"  {error}")
        sources, failures = [], [{"name": name, "error": str(error)} for name in packages]
    origin = "debian"
    if not sources:
        log("no Debian package could be fetched (apt missing, or every package failed): building the corpus "
            "from the photographs bundled with scikit-image and scikit-learn instead")
        sources, origin, unseen = _bundled_sources(), "scikit-image and scikit-learn", None
    elif bundled:
        sources, origin = [*sources, *_bundled_sources()], "debian, scikit-image and scikit-learn"
    kept, rejected, dropped = _plan(sources, unseen, val_fraction, log)
    roots = {source.name: source.root for source in sources}
    manifest = {
        "generator": GENERATOR,
        "format": FORMAT,
        "origin": origin,
        "settings": {
            "packages": list(packages), "unseen": unseen, "val_fraction": val_fraction, "bundled": bundled,
            "include_globs": {name: list(globs) for name, globs in INCLUDE_GLOBS.items()},
            "exclude_globs": {name: list(globs) for name, globs in EXCLUDE_GLOBS.items()},
            "image_suffixes": list(IMAGE_SUFFIXES),
            "non_photo_rule": {"min_side": MIN_SIDE, "min_unclipped": MIN_UNCLIPPED,
                               "max_zero_residual": MAX_ZERO_RESIDUAL, "detail_side": DETAIL_SIDE,
                               "detail_level": DETAIL_LEVEL, "min_detail": MIN_DETAIL},
            "duplicate_rule": {"hash": f"{HASH_SIDE}x{HASH_SIDE} DCT signs of a {HASH_INPUT}x{HASH_INPUT} grey copy",
                               "centre_crops_to_each_aspect": True, "max_hamming_distance": MAX_HASH_DISTANCE},
        },
        "libraries": {name: _package_version(name) for name in ("pillow", "numpy", "scipy")},
        "failed_packages": failures,
        "packages": _package_records(sources, kept, rejected, dropped),
        "split_sizes": {split: sum(record["split"] == split for record in kept) for split in SPLITS},
        "files": kept,
        "rejected": rejected,
        "duplicates": dropped,
    }
    if _up_to_date(out, previous, manifest):
        log(f"{out} is already up to date ({len(kept)} files); nothing written")
        return previous
    _write(out, manifest, roots)
    sizes = ", ".join(f"{count} {split}" for split, count in manifest["split_sizes"].items())
    log(f"wrote {len(kept)} photographs ({sizes}) to {out}; {len(rejected)} rejected, {len(dropped)} duplicates")
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {GENERATOR}", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder (created; an earlier output of this command is updated)")
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--unseen", default=DEFAULT_UNSEEN, help="package held out whole as test_unseen ('' for none)")
    parser.add_argument("--cache-dir", default=None, help="download cache (default ~/.cache/flowmo/debian)")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--no-bundled", dest="bundled", action="store_false",
                        help="leave out the photographs bundled with scikit-image and scikit-learn")
    args = parser.parse_args(argv)
    try:
        build_photo_corpus(args.out, args.packages, args.unseen or None, args.cache_dir, args.val_fraction,
                           bundled=args.bundled)
    except (FileExistsError, ValueError) as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
