"""Datasets (image folders, the ImageNet tar + JSON index, sklearn digits) and resumable sampling.

Every dataset yields ``(image (3,S,S) float in [-1,1], label int)`` and exposes
``class_names``, ``num_classes``, ``skipped``, ``skipped_files`` and ``len``. Bad files never
crash a run: a dataset warns once per file, records it in shared memory (so files met by
DataLoader workers count in the main process too) and returns the next readable sample, so
batch shapes stay fixed. Evaluation uses ``exact_item`` instead, which never substitutes one.
"""

from __future__ import annotations

import json
import math
import os
import tarfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .fileio import atomic_write
from .cli import loader_workers, user_path
from .images import ImageDecodeError, load_image, pil_to_tensor

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "ImageNetTarDataset",
    "DigitsDataset",
    "SubsetDataset",
    "build_dataset",
    "write_tar_index",
    "synset_of",
    "ResumableSampler",
    "infinite_batches",
]

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".jp2",
)
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS_VAL_SIZE = 297
DIGITS_SPLIT_SEED = 0


class _SkippingImageDataset(Dataset):
    """Shared bad-file policy: warn, count, and deterministically return the next good sample."""

    def __init__(self, image_size: int, train: bool, max_pixels: int | None, hflip: bool):
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size
        self.train = train
        self.max_pixels = max_pixels
        self.hflip = hflip
        self.class_names: list[str] = []
        self.augmentation_key = (0, 0)  # (seed, epoch), set by infinite_batches before each epoch

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def set_augmentation_epoch(self, seed: int, epoch: int) -> None:
        """Random crops/flips of sample i become a function of (seed, epoch, i) alone.

        So they do not depend on which DataLoader worker loads a sample or on RNG history,
        and a run resumed mid-epoch sees exactly the crops of an uninterrupted one.
        """
        self.augmentation_key = (seed, epoch)

    def _augmentation_generator(self, index: int) -> torch.Generator | None:
        if not self.train:
            return None
        seed, epoch = self.augmentation_key
        return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + index) % 2**63)

    def _share_bad_file_record(self) -> None:
        """One flag per file in shared memory (called once the file list is known): a worker process
        that meets an unreadable file marks it for the main process and for later epochs' workers."""
        self._bad = torch.zeros(len(self), dtype=torch.bool).share_memory_()

    @property
    def skipped(self) -> int:
        """Number of unreadable files met so far (by this process and its DataLoader workers)."""
        return int(self._bad.sum())

    @property
    def skipped_files(self) -> list[str]:
        """The unreadable files met so far, as their error messages name them."""
        return [self._describe(i) for i in self._bad.nonzero().flatten().tolist()]

    def _describe(self, index: int) -> str:
        raise NotImplementedError

    def _read(self, index: int) -> tuple[Any, int]:
        """(encoded bytes or path, label) of sample ``index``."""
        raise NotImplementedError

    def _decode(self, index: int) -> tuple[Any, int] | None:
        """(PIL image, label) of file ``index``, or None when it is unreadable (warned about once)."""
        if self._bad[index]:
            return None
        try:
            source, label = self._read(index)
            return load_image(source, max_pixels=self.max_pixels, name=self._describe(index)), label
        except ImageDecodeError as error:
            self._bad[index] = True
            warnings.warn(f"skipping unreadable image {error}", RuntimeWarning, stacklevel=3)
            return None

    def _tensor(self, decoded: tuple[Any, int], index: int) -> tuple[torch.Tensor, int]:
        img, label = decoded
        generator = self._augmentation_generator(index)
        return pil_to_tensor(img, self.image_size, self.train, generator=generator, hflip=self.hflip), label

    def exact_item(self, index: int) -> tuple[torch.Tensor, int] | None:
        """Sample ``index`` itself, or None when its file is unreadable (then counted in ``skipped``):
        evaluation must not score a neighbour in its place."""
        decoded = self._decode(index)
        return None if decoded is None else self._tensor(decoded, index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        count = len(self)
        if not 0 <= index < count:
            raise IndexError(f"index {index} out of range for a dataset of {count} images")
        for offset in range(count):
            decoded = self._decode((index + offset) % count)
            if decoded is not None:
                return self._tensor(decoded, index)
        raise RuntimeError(f"no readable image in the dataset ({count} files, all unreadable)")


class ImageFolderDataset(_SkippingImageDataset):
    """``root/<class name>/**/<image>``; class ids follow the sorted folder names.

    A root with no class folders but images directly inside is one class named after the
    root. ``extensions`` are matched case-insensitively.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int,
        train: bool,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        *,
        max_pixels: int | None = None,
        hflip: bool = False,
    ):
        super().__init__(image_size, train, max_pixels, hflip)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        extensions = tuple(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions)

        def images_under(folder: Path, recursive: bool) -> list[Path]:
            candidates = folder.rglob("*") if recursive else folder.iterdir()
            return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in extensions)

        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.samples: list[tuple[Path, int]] = []
        for class_dir in class_dirs:
            files = images_under(class_dir, recursive=True)
            if files:
                self.samples.extend((path, len(self.class_names)) for path in files)
                self.class_names.append(class_dir.name)
        if not self.samples:
            loose = images_under(self.root, recursive=False)
            if loose:
                self.class_names = [self.root.name]
                self.samples = [(path, 0) for path in loose]
        if not self.samples:
            raise ValueError(
                f"no images with extensions {', '.join(extensions)} found in {self.root} "
                "(expected root/<class name>/<image files>)"
            )
        self._share_bad_file_record()

    def __len__(self) -> int:
        return len(self.samples)

    def _describe(self, index: int) -> str:
        return str(self.samples[index][0])

    def _read(self, index: int) -> tuple[Path, int]:
        return self.samples[index]


def synset_of(name: str) -> str:
    """The class of a tar member: its parent folder, else the file-name prefix before '_'.

    "n01440764/n01440764_10026.JPEG" and "n01440764_10026.JPEG" both give "n01440764".
    """
    parts = name.replace("\\", "/").strip("/").split("/")
    if len(parts) > 1:
        return parts[-2]
    stem = parts[-1]
    if stem.startswith("ILSVRC2012_val"):
        raise ValueError(
            f"tar member {name!r} carries no class: ImageNet validation images must be stored "
            "as <synset>/<file> in the tar (or name files <synset>_<id>.JPEG)"
        )
    if "_" not in stem:
        raise ValueError(f"tar member {name!r} has no class folder and no '<class>_' prefix")
    return stem.split("_", 1)[0]


def write_tar_index(tar_path: str | os.PathLike, index_path: str | os.PathLike) -> list[dict]:
    """Write the JSON index [{"name", "offset", "size"}] of every regular file in an uncompressed tar."""
    entries = []
    with tarfile.open(tar_path, mode="r:") as archive:
        for member in archive:
            if member.isfile():
                entries.append({"name": member.name, "offset": member.offset_data, "size": member.size})
    atomic_write(index_path, lambda tmp: tmp.write_text(json.dumps(entries)))
    return entries


class ImageNetTarDataset(_SkippingImageDataset):
    """Images stored in one uncompressed tar, located by a JSON index of byte offsets.

    The index is a list of ``{"name": str, "offset": int, "size": int}`` (offset = start of
    the member's data). Classes come from :func:`synset_of`; ids are the sorted class names
    unless ``class_index_path`` (JSON ``{synset: id}``) fixes them. The tar is opened lazily
    in each process, so DataLoader workers each hold their own handle.
    """

    def __init__(
        self,
        tar_path: str | os.PathLike,
        index_path: str | os.PathLike,
        image_size: int,
        train: bool,
        class_index_path: str | os.PathLike | None = None,
        *,
        max_pixels: int | None = None,
        hflip: bool = False,
    ):
        super().__init__(image_size, train, max_pixels, hflip)
        self.tar_path = Path(tar_path)
        index_path = Path(index_path)
        for path, what in ((self.tar_path, "tar file"), (index_path, "tar index")):
            if not path.is_file():
                raise FileNotFoundError(f"{what} not found: {path}")
        entries = json.loads(index_path.read_text())
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{index_path}: expected a non-empty JSON list of {{name, offset, size}}")
        tar_size = self.tar_path.stat().st_size
        self.entries: list[tuple[str, int, int]] = []
        for position, entry in enumerate(entries):
            try:
                name, offset, size = str(entry["name"]), int(entry["offset"]), int(entry["size"])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{index_path}: entry {position} is not {{name, offset, size}}: {entry!r}") from error
            if offset < 0 or size <= 0 or offset + size > tar_size:
                raise ValueError(
                    f"{index_path}: entry {name!r} (offset {offset}, size {size}) lies outside "
                    f"{self.tar_path} ({tar_size} bytes)"
                )
            self.entries.append((name, offset, size))
        synsets = [synset_of(name) for name, _, _ in self.entries]
        if class_index_path is not None:
            mapping = json.loads(Path(class_index_path).read_text())
            unknown = sorted(set(synsets) - set(mapping))
            if unknown:
                raise ValueError(f"{class_index_path} has no id for classes {unknown[:5]}")
            class_to_id = {str(k): int(v) for k, v in mapping.items()}
        else:
            class_to_id = {name: i for i, name in enumerate(sorted(set(synsets)))}
        self.class_names = [""] * (max(class_to_id.values()) + 1)
        for synset, class_id in class_to_id.items():
            self.class_names[class_id] = synset
        self.labels = [class_to_id[s] for s in synsets]
        self._file = None
        self._file_pid: int | None = None
        self._share_bad_file_record()

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_file_pid"] = None
        return state

    def _describe(self, index: int) -> str:
        return f"{self.tar_path}:{self.entries[index][0]}"

    def _read(self, index: int) -> tuple[bytes, int]:
        if self._file is None or self._file_pid != os.getpid():
            self._file = open(self.tar_path, "rb")
            self._file_pid = os.getpid()
        _, offset, size = self.entries[index]
        self._file.seek(offset)
        data = self._file.read(size)
        if len(data) != size:
            raise ImageDecodeError(f"read {len(data)} of {size} bytes at offset {offset}")
        return data, self.labels[index]


class DigitsDataset(Dataset):
    """scikit-learn's 8×8 digits (1797 images, 10 classes) upscaled to ``image_size``.

    A fixed stratified split (297 validation images, seed 0). Pixels 0..16 map to [-1, 1]
    (0 = background = -1); upscaling is bilinear with antialiasing, grey replicated to RGB.
    No crops or flips (a flipped digit is another symbol), so ``train`` changes nothing.
    """

    skipped = 0  # generated in memory: nothing is ever unreadable
    skipped_files: list[str] = []

    def __init__(self, split: str, image_size: int, train: bool = False):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if split not in ("train", "val"):
            raise ValueError(f"digits split must be 'train' or 'val', got {split!r}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        digits = load_digits()
        train_ids, val_ids = train_test_split(
            list(range(len(digits.target))),
            test_size=DIGITS_VAL_SIZE,
            random_state=DIGITS_SPLIT_SEED,
            stratify=digits.target,
        )
        ids = torch.tensor(sorted(train_ids if split == "train" else val_ids))
        self.split = split
        self.image_size = image_size
        self.train = train
        self.indices = ids
        self.pixels = torch.as_tensor(digits.images, dtype=torch.float32)[ids] / 8.0 - 1.0
        self.targets = torch.as_tensor(digits.target, dtype=torch.int64)[ids]

    @property
    def class_names(self) -> list[str]:
        return list(DIGIT_NAMES)

    @property
    def num_classes(self) -> int:
        return len(DIGIT_NAMES)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.pixels[index][None, None]
        if self.image_size != 8:
            image = F.interpolate(
                image, size=(self.image_size, self.image_size), mode="bilinear",
                align_corners=False, antialias=True,
            )
        return image[0].clamp(-1.0, 1.0).expand(3, -1, -1).contiguous(), int(self.targets[index])

    def exact_item(self, index: int) -> tuple[torch.Tensor, int]:
        return self[index]


def random_affine(images: Tensor, generator: torch.Generator, max_degrees: float = 10.0,
                  max_scale: float = 0.1, max_shift: float = 0.08, hflip: bool = False) -> Tensor:
    """Small random rotation, scale and shift (and optional horizontal flip) per image; (B,3,H,W) -> same.

    Shifts are fractions of the image side; the background fill is -1 (black), as in digits.
    """
    batch = images.shape[0]

    def uniform(scale: float) -> Tensor:
        return (torch.rand(batch, generator=generator) * 2 - 1) * scale

    angle = uniform(math.radians(max_degrees))
    scale = 1.0 + uniform(max_scale)
    flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0) if hflip else torch.ones(batch)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(2 * max_shift)], 1),
                         torch.stack([sin * flip, cos, uniform(2 * max_shift)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images + 1.0, grid, align_corners=False, padding_mode="zeros") - 1.0


def evenly_spaced(total: int, count: int) -> list[int]:
    """``min(count, total)`` distinct indices spread evenly over range(total), first and last included.

    Picking images this way covers every class of a class-sorted dataset (an ImageFolder),
    where the first ``count`` images would all come from one class.
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    if total <= 0:
        return []
    return torch.linspace(0, total - 1, min(count, total)).round().long().unique().tolist()


def stack_dataset(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """All (image, label) pairs of a small dataset -> images (N,3,H,W) in [-1,1], labels (N,) int64."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


class SubsetDataset(Dataset):
    """Evenly spaced subset of a dataset (covers every class of a class-sorted dataset)."""

    def __init__(self, dataset: Dataset, size: int):
        if size <= 0:
            raise ValueError(f"subsample must be positive, got {size}")
        self.dataset = dataset
        self.indices = evenly_spaced(len(dataset), size)

    class_names = property(lambda self: self.dataset.class_names)
    num_classes = property(lambda self: self.dataset.num_classes)
    skipped = property(lambda self: self.dataset.skipped)
    skipped_files = property(lambda self: self.dataset.skipped_files)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset[self.indices[index]]

    def exact_item(self, index: int) -> tuple[torch.Tensor, int] | None:
        return self.dataset.exact_item(self.indices[index])


def _config_value(data_cfg: Mapping, key: str) -> Any:
    """``data_cfg[key]`` or None; an OmegaConf "???" (mandatory, unset) also reads as None."""
    try:
        return data_cfg.get(key)
    except Exception as error:
        if type(error).__name__ == "MissingMandatoryValue":
            return None
        raise


def _required_path(data_cfg: Mapping, key: str) -> Path:
    value = _config_value(data_cfg, key)
    if value in (None, "", "???"):
        raise ValueError(f"data.{key} is not set: pass data.{key}=/path/to/... on the command line")
    path = user_path(value)
    if not path.exists():
        raise FileNotFoundError(f"data.{key} does not exist: {path}")
    return path


def build_dataset(data_cfg: Mapping, split: str, image_size: int, train: bool) -> Dataset:
    """The dataset named by ``data_cfg["name"]`` ("imagefolder", "imagenet_tar", "digits").

    ``split`` is "train" or "val". Keys per name: imagefolder ``root`` / ``val_root``;
    imagenet_tar ``train_tar``, ``train_index``, ``val_tar``, ``val_index`` and optional
    ``class_index``; all: optional ``subsample`` (N evenly spaced images of the val split),
    ``max_pixels``, ``hflip`` (random horizontal flips when ``train``).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    name = data_cfg.get("name")
    max_pixels = _config_value(data_cfg, "max_pixels")
    common = {
        "max_pixels": int(max_pixels) if max_pixels is not None else None,
        "hflip": bool(_config_value(data_cfg, "hflip")),
    }
    if name == "digits":
        dataset: Dataset = DigitsDataset(split, image_size, train)
    elif name == "imagefolder":
        key = "root" if split == "train" else "val_root"
        dataset = ImageFolderDataset(_required_path(data_cfg, key), image_size, train, **common)
    elif name == "imagenet_tar":
        class_index = _config_value(data_cfg, "class_index")
        dataset = ImageNetTarDataset(
            _required_path(data_cfg, f"{split}_tar"),
            _required_path(data_cfg, f"{split}_index"),
            image_size,
            train,
            class_index_path=_required_path(data_cfg, "class_index") if class_index else None,
            **common,
        )
    else:
        raise ValueError(f"unknown dataset name {name!r}: expected 'imagefolder', 'imagenet_tar' or 'digits'")
    subsample = _config_value(data_cfg, "subsample")
    if subsample is not None and split != "train":
        dataset = SubsetDataset(dataset, int(subsample))
    return dataset


class ResumableSampler(Sampler[int]):
    """Shuffled (or ordered) indices whose position survives a restart.

    Epoch ``e`` uses the permutation drawn from ``seed + e``; with ``num_replicas`` > 1 each
    rank takes a disjoint strided slice of it (the tail that does not divide evenly is
    dropped, so every rank sees the same count). ``position`` counts this rank's samples
    consumed in the current epoch; the consumer records consumption with :meth:`advance`
    (not the iterator, which a DataLoader runs ahead of the training step).
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if num_replicas <= 0 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        if num_samples < num_replicas:
            raise ValueError(f"{num_samples} samples cannot be split over {num_replicas} ranks")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.position = 0

    @property
    def samples_per_epoch(self) -> int:
        """Samples this rank sees in one epoch."""
        return self.num_samples // self.num_replicas

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """This rank's indices for ``epoch``, (samples_per_epoch,) int64."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        usable = self.samples_per_epoch * self.num_replicas
        return order[:usable][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        # Materialised now, so advance() during iteration cannot shift what is yielded.
        return iter(self.epoch_indices(self.epoch)[self.position :].tolist())

    def __len__(self) -> int:
        return self.samples_per_epoch - self.position

    def advance(self, n_samples: int) -> None:
        """Record that ``n_samples`` more samples were consumed; rolls over into later epochs."""
        if n_samples < 0:
            raise ValueError(f"cannot advance by a negative count ({n_samples})")
        total = self.position + n_samples
        self.epoch += total // self.samples_per_epoch
        self.position = total % self.samples_per_epoch

    def start_next_epoch(self) -> None:
        """Skip what is left of this epoch (the partial last batch)."""
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this sampler uses seed {self.seed}")
        position = int(state["position"])
        if not 0 <= position < self.samples_per_epoch:
            raise ValueError(
                f"sampler position {position} is outside an epoch of {self.samples_per_epoch} samples "
                "(was the dataset or number of processes changed?)"
            )
        self.epoch = int(state["epoch"])
        self.position = position


def infinite_batches(
    dataset: Dataset,
    batch_size: int,
    sampler: ResumableSampler,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless full batches ``(images (B,3,S,S), labels (B,))`` across epochs.

    The sampler advances by each batch when it is yielded (not when prefetched), so
    ``sampler.state_dict()`` taken between batches resumes at the exact next sample. The
    partial batch at an epoch's end is dropped. Each epoch's DataLoader gets a generator
    seeded from (seed, epoch, position), so worker seeds do not depend on the global RNG.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if batch_size > sampler.samples_per_epoch:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {sampler.samples_per_epoch} samples per epoch of this rank"
        )
    while True:
        if isinstance(dataset, _SkippingImageDataset):
            dataset.set_augmentation_epoch(sampler.seed, sampler.epoch)
        loader_seed = (sampler.seed * 1_000_003 + sampler.epoch) * 1_000_003 + sampler.position
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=loader_workers(num_workers),
            pin_memory=pin_memory,
            drop_last=True,
            generator=torch.Generator().manual_seed(loader_seed % (2**63)),
        )
        for images, labels in loader:
            sampler.advance(len(labels))
            yield images, labels
        if sampler.position != 0:
            sampler.start_next_epoch()
