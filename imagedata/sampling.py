"""Resumable sampling: a sampler whose position survives a restart, and endless full batches over it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from runkit.cli import loader_workers

from .skipping import SkippingImageDataset


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
        if isinstance(dataset, SkippingImageDataset):
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
