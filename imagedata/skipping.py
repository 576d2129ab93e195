"""The bad-file policy every file-backed dataset shares, and its per-sample augmentation key.

Bad files never crash a run: a dataset warns once per file, records it in shared memory (so
files met by DataLoader workers count in the main process too) and returns the next readable
sample, so batch shapes stay fixed. Evaluation uses ``exact_item`` instead, which never
substitutes one.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils.data import Dataset

from runkit.images import ImageDecodeError, load_image, pil_to_tensor

from .augment import BLACK


class SkippingImageDataset(Dataset):
    """Shared bad-file policy: warn, count, and deterministically return the next good sample."""

    background = BLACK  # what jitter (imagedata.random_affine) fills uncovered pixels with, unless overridden

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
