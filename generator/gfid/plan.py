"""The sampling plan: which class and seed every sample index has, cut into shards and batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run with global ``seed`` (numpy SeedSequence mixing)."""
    words = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def classes_for_samples(indices: np.ndarray | Sequence[int], num_classes: int) -> np.ndarray:
    """Round-robin class assignment: sample ``i`` gets class ``i % num_classes``. (N,) int64."""
    return np.asarray(indices, dtype=np.int64) % num_classes


@dataclass(frozen=True)
class SamplePlan:
    """The fixed list of (sample index, class, seed), cut into shards and batches."""

    num_samples: int
    num_classes: int
    seed: int = 0
    shard_size: int = 1000
    batch_size: int = 50

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_classes", "shard_size", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size > self.shard_size:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed shard_size ({self.shard_size})")

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_samples / self.shard_size)

    def shard_indices(self, shard: int) -> np.ndarray:
        """Sample indices of ``shard``, (n,) int64."""
        if not 0 <= shard < self.num_shards:
            raise ValueError(f"shard {shard} out of range [0, {self.num_shards})")
        start = shard * self.shard_size
        return np.arange(start, min(start + self.shard_size, self.num_samples), dtype=np.int64)

    def shard_seeds(self, shard: int) -> np.ndarray:
        """Seeds of the samples of ``shard``, (n,) int64."""
        return np.array([sample_seed(self.seed, i) for i in self.shard_indices(shard)], dtype=np.int64)

    def shards_for_process(self, rank: int, world_size: int) -> list[int]:
        """Shard ``k`` belongs to process ``k % world_size``."""
        return list(range(rank, self.num_shards, world_size))

    def class_counts(self) -> np.ndarray:
        """Samples per class, (num_classes,)."""
        return np.bincount(classes_for_samples(np.arange(self.num_samples), self.num_classes),
                           minlength=self.num_classes)
