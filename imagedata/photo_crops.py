"""Streaming crops of whole photographs: a fresh random crop of every photo in every epoch.

Training draws, per photo and epoch, a square crop whose side is log-uniform between
``min_scale`` and ``max_scale`` of the photo's short side, at a uniform position, resizes it to
the model resolution with an antialiased filter, flips it half the time and jitters brightness,
contrast and saturation mildly. The draw is a function of (seed, epoch, photo) alone
(:meth:`~imagedata.skipping.SkippingImageDataset.set_augmentation_epoch`), so a resumed run sees
the crops of an uninterrupted one, and over a run every photo is seen at many scales and places:
never a fixed list of crops.

Evaluation takes ``eval_crops`` fixed crops per photo (the same draw rule, seeded by the photo
and crop number), so a held-out split is scored at every scale too. An evaluation crop with no
content (:func:`is_flat`: a patch of night sky, a blank wall) is drawn again, up to
``FLAT_REDRAWS`` times: it tests nothing, and any codec that keeps a constant exactly scores an
infinite PSNR on it.

Photos are decoded once and kept in memory with their short side at most ``cache_side`` pixels:
large wallpapers would otherwise cost a full decode per sample.

Two training-set controls, both by package (the corpus's class folders): ``max_photos`` keeps a
subset spread over the packages (:func:`spread_over_packages`), for measuring how quality grows
with the number of photographs; ``package_balance`` repeats the photos of small packages within an
epoch (:func:`package_repeats`), each repeat a different crop, so that a package with hundreds of
similar pictures (stellarium's nebulae) does not drown the few of another.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from runkit.images import uint8_to_tensor

from .folder import IMAGE_EXTENSIONS, ImageFolderDataset
from .photo_corpus import read_manifest


FLAT_STD_LEVELS = 2.0  # uint8 levels
FLAT_REDRAWS = 20


def is_flat(pixels: torch.Tensor) -> bool:
    """True when (3, H, W) pixels in [-1, 1] vary by less than ``FLAT_STD_LEVELS`` uint8 levels (std)."""
    return float(pixels.std()) * 127.5 < FLAT_STD_LEVELS


@dataclass(frozen=True)
class CropSettings:
    """How crops are drawn (the defaults are the photo recipe's)."""

    min_scale: float = 0.05  # crop side / photo short side, log-uniform in [min_scale, max_scale]
    max_scale: float = 0.9
    hflip: bool = True
    jitter: float = 0.1  # brightness, contrast and saturation each scaled by U(1 - jitter, 1 + jitter)

    def __post_init__(self) -> None:
        if not 0.0 < self.min_scale <= self.max_scale <= 1.0:
            raise ValueError(f"crop scales must satisfy 0 < min_scale <= max_scale <= 1, got "
                             f"{self.min_scale}, {self.max_scale}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"colour jitter must be in [0, 1), got {self.jitter}")


def crop_box(width: int, height: int, settings: CropSettings, generator: torch.Generator) -> tuple[int, int, int]:
    """(left, top, side) of a square crop of a width x height photo (at least 1 px, inside it)."""
    short = min(width, height)
    low, high = math.log(settings.min_scale), math.log(settings.max_scale)
    scale = math.exp(low + (high - low) * float(torch.rand((), generator=generator)))
    side = max(1, min(short, round(scale * short)))
    left = int(torch.randint(0, width - side + 1, (), generator=generator))
    top = int(torch.randint(0, height - side + 1, (), generator=generator))
    return left, top, side


def colour_jitter(pixels: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation of (3, H, W) pixels in [-1, 1], each scaled by
    U(1 - strength, 1 + strength), clamped back to [-1, 1]."""
    if strength == 0:
        return pixels
    brightness, contrast, saturation = (1.0 + strength * (2 * torch.rand(3, generator=generator) - 1)).tolist()
    x = (pixels + 1) / 2 * brightness
    mean = x.mean()
    x = (x - mean) * contrast + mean
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    x = (x - grey) * saturation + grey
    return (x * 2 - 1).clamp(-1, 1)


def crop_to_tensor(img: Image.Image, box: tuple[int, int, int], image_size: int) -> torch.Tensor:
    """The square ``box`` of ``img`` resized to image_size (antialiased) -> (3, S, S) in [-1, 1]."""
    left, top, side = box
    crop = img.crop((left, top, left + side, top + side))
    crop = crop.resize((image_size, image_size), Image.Resampling.LANCZOS if side > image_size
                       else Image.Resampling.BICUBIC)
    return uint8_to_tensor(torch.from_numpy(np.array(crop, dtype=np.uint8, copy=True)))


def cached_photo(img: Image.Image, cache_side: int) -> Image.Image:
    """RGB ``img`` with its short side shrunk to at most ``cache_side`` (antialiased)."""
    img = img.convert("RGB")
    short = min(img.size)
    if short <= cache_side:
        return img
    scale = cache_side / short
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)


def spread_over_packages(labels: Sequence[int], count: int) -> list[int]:
    """Indices of ``count`` items taken round-robin over the packages in ``labels``.

    Within a package the picks are evenly spaced through its (sorted) files; a package that runs out
    leaves its turns to the others. ``labels``: one package index per photo.
    """
    if count < 1:
        raise ValueError(f"max_photos must be >= 1, got {count}")
    members: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        members.setdefault(label, []).append(index)
    orders = {label: [items[i] for i in _evenly_spread(len(items))] for label, items in sorted(members.items())}
    chosen: list[int] = []
    for turn in range(max(len(order) for order in orders.values())):
        for order in orders.values():
            if turn < len(order) and len(chosen) < count:
                chosen.append(order[turn])
    return sorted(chosen)


def _evenly_spread(n: int) -> list[int]:
    """0..n-1 ordered so that every prefix is spread evenly over the range (bit-reversal order)."""
    order, seen = [], set()
    step = 1 << max(0, (n - 1).bit_length())
    while step >= 1:
        for i in range(0, n, step):
            if i not in seen:
                seen.add(i)
                order.append(i)
        step //= 2
    return order


def package_repeats(labels: Sequence[int], balance: float) -> list[int]:
    """How many crops of each photo one training epoch draws: ``round((n_max / n_k) ** balance)``.

    ``n_k`` is the number of photos of the photo's package, ``n_max`` that of the largest package.
    Package k's share of an epoch is then about ``n_k ** (1 - balance)``: 0 keeps the corpus's
    proportions (every photo once), 1 gives every package the same share.
    """
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"package_balance must be in [0, 1], got {balance}")
    sizes = Counter(labels)
    largest = max(sizes.values())
    return [max(1, round((largest / sizes[label]) ** balance)) for label in labels]


class PhotoCropsDataset(ImageFolderDataset):
    """Random (train) or fixed multi-scale (eval) crops of the photographs under ``root``.

    Train: ``crops_per_photo`` x ``package_repeats`` items per photo (one with the defaults); each
    epoch draws a new crop for every item (a few photos need several crops each to fill a batch).
    Eval: ``eval_crops`` fixed crops per photo, item ``i``
    being crop ``i // photos`` of photo ``i % photos``. ``max_photos`` keeps that many photos,
    spread over the packages, in either mode.
    """

    def __init__(self, root: str | os.PathLike, image_size: int, train: bool, *,
                 settings: CropSettings = CropSettings(), eval_crops: int = 4, cache_side: int = 768,
                 seed: int = 0, max_pixels: int | None = None, max_photos: int | None = None,
                 package_balance: float = 0.0, crops_per_photo: int = 1):
        if eval_crops < 1:
            raise ValueError(f"eval_crops must be >= 1, got {eval_crops}")
        if crops_per_photo < 1:
            raise ValueError(f"crops_per_photo must be >= 1, got {crops_per_photo}")
        if cache_side < image_size:
            raise ValueError(f"cache_side ({cache_side}) must be at least image_size ({image_size})")
        self.settings, self.eval_crops, self.cache_side, self.seed = settings, eval_crops, cache_side, seed
        self._cache: dict[int, Image.Image] = {}
        super().__init__(root, image_size, train, IMAGE_EXTENSIONS, max_pixels=max_pixels, hflip=settings.hflip)
        if max_photos is not None:
            self.samples = [self.samples[i] for i in spread_over_packages([label for _, label in self.samples],
                                                                          max_photos)]
            self._share_bad_file_record()
        repeats = package_repeats([label for _, label in self.samples], package_balance)
        self._photo_of_item = [photo for photo, times in enumerate(repeats) for _ in range(times * crops_per_photo)]

    @property
    def photos(self) -> int:
        return len(self.samples)

    def data_record(self) -> dict:
        """What this dataset draws from, for saving beside a model trained on it: the corpus manifest's
        origin and per-package version and licence, and the record of every photo (package, version, path
        in the package, licence, sha256). Photos the manifest does not list (a folder that is not a corpus)
        appear by file name only."""
        corpus = self.root.parent
        manifest = read_manifest(corpus) or {}
        by_file = {record["file"]: record for record in manifest.get("files", [])}
        photos = []
        for path, _ in self.samples:
            key = Path(path).resolve().relative_to(corpus.resolve()).as_posix() if manifest else str(path)
            photos.append(by_file.get(key, {"file": key}))
        packages: dict[str, dict] = {}
        for record in photos:
            entry = packages.setdefault(record.get("package", Path(record["file"]).parts[-2]),
                                        {"version": record.get("version"), "licences": [], "photos": 0})
            entry["photos"] += 1
            if record.get("licence") not in (None, *entry["licences"]):
                entry["licences"].append(record["licence"])
        return {"dataset": "photo_crops", "corpus": str(corpus), "split": self.root.name,
                "origin": manifest.get("origin"), "settings": {**vars(self.settings),
                                                              "crops per epoch": len(self)},
                "packages": packages, "photos": photos}

    def __len__(self) -> int:
        return len(self._photo_of_item) if self.train else self.photos * self.eval_crops

    def _photo(self, index: int) -> int:
        return self._photo_of_item[index] if self.train else index % self.photos

    def _share_bad_file_record(self) -> None:
        self._bad = torch.zeros(self.photos, dtype=torch.bool).share_memory_()  # one flag per photo

    # The base class reads and describes files by photo index (its bad-file flags are one per photo).
    def _describe(self, index: int) -> str:
        return str(self.samples[index][0])

    def _read(self, index: int):
        return self.samples[index]

    def _decode(self, index: int):
        """(photo, label) of the photo behind item ``index``, decoded once and cached."""
        photo = self._photo(index)
        if photo not in self._cache:
            decoded = super()._decode(photo)
            if decoded is None:
                return None
            self._cache[photo] = cached_photo(decoded[0], self.cache_side)
        return self._cache[photo], self.samples[photo][1]

    def _tensor(self, decoded, index: int) -> tuple[torch.Tensor, int]:
        img, label = decoded
        if self.train:
            generator = self._augmentation_generator(index)
        else:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**63)
        pixels = crop_to_tensor(img, crop_box(img.width, img.height, self.settings, generator), self.image_size)
        if self.train:
            if self.settings.hflip and bool(torch.rand((), generator=generator) < 0.5):
                pixels = pixels.flip(-1)
            return colour_jitter(pixels, self.settings.jitter, generator), label
        for _ in range(FLAT_REDRAWS):
            if not is_flat(pixels):
                break
            pixels = crop_to_tensor(img, crop_box(img.width, img.height, self.settings, generator), self.image_size)
        return pixels, label
