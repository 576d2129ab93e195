"""Small views of a dataset: evenly spaced indices, an evenly spaced subset, all of it stacked in memory."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .augment import background_of


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
    background = property(lambda self: background_of(self.dataset))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset[self.indices[index]]

    def exact_item(self, index: int) -> tuple[torch.Tensor, int] | None:
        return self.dataset.exact_item(self.indices[index])
