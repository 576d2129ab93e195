"""The token cache: a dataset encoded once by a FlowMo tokenizer, read by generator training.

Layout of a cache directory::

    manifest.json                 tokenizer architecture_hash, num_indices, vocab_size, classes,
                                  augmentations, shard list, complete flag
    shard_00000.safetensors       "indices" (n, A, N) int16/int32 (A = one row per augmentation:
                                  the image, and its horizontal flip when enabled), "labels" (n,) int64

Shard k holds dataset items [k * shard_size, (k + 1) * shard_size). Shards are written
atomically, so an interrupted run resumes by skipping the shards that exist.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from runkit.cli import loader_workers
from runkit.fileio import atomic_write
from imagedata import background_of, random_affine

MANIFEST_FILE = "manifest.json"
CACHE_FORMAT_VERSION = 1
AUGMENTATIONS_FLIP = ("none", "hflip")
JITTER_SEED = 20_251_127  # jittered views of shard k draw from JITTER_SEED + k: a rerun rebuilds the same cache


def shard_file(shard: int) -> str:
    return f"shard_{shard:05d}.safetensors"


def encoder_fingerprint(tokenizer: Any) -> str:
    """Short hash of a FlowMo encoder's weights: what decides the tokens (a retrained tokenizer of the
    same architecture gets a new one, so its cache is never mistaken for the old one's)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tokenizer.encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def index_dtype(vocab_size: int) -> torch.dtype:
    """Smallest signed integer dtype that stores indices < vocab_size (safetensors has no uint16 in torch)."""
    return torch.int16 if vocab_size <= 2**15 else torch.int32


@dataclass
class TokenCacheManifest:
    tokenizer_hash: str
    num_indices: int
    vocab_size: int
    num_classes: int
    class_names: list[str]
    num_items: int
    shard_size: int
    augmentations: list[str] = field(default_factory=lambda: ["none"])
    source: str = ""
    encoder_fingerprint: str = ""  # empty in caches written before it was recorded
    complete: bool = False
    format_version: int = CACHE_FORMAT_VERSION

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_items / self.shard_size)

    def shard_range(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_items))

    def same_content(self, other: "TokenCacheManifest") -> bool:
        """True when ``other`` describes the same tokens (ignoring the completion flag)."""
        mine, theirs = asdict(self), asdict(other)
        mine.pop("complete"), theirs.pop("complete")
        return mine == theirs


def read_manifest(directory: str | os.PathLike) -> TokenCacheManifest:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a token cache "
                                "(write one with `python -m generator.tokenize_dataset`)")
    data = json.loads(path.read_text())
    if data.get("format_version") != CACHE_FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {data.get('format_version')}, this code reads "
                         f"{CACHE_FORMAT_VERSION}: tokenize the dataset again")
    return TokenCacheManifest(**data)


def write_manifest(directory: str | os.PathLike, manifest: TokenCacheManifest) -> None:
    atomic_write(Path(directory) / MANIFEST_FILE, lambda tmp: tmp.write_text(json.dumps(asdict(manifest), indent=2)))


def write_shard(directory: str | os.PathLike, shard: int, indices: Tensor, labels: Tensor, vocab_size: int) -> None:
    """indices (n, A, N), labels (n,) -> shard file, atomically."""
    from safetensors.torch import save_file

    tensors = {"indices": indices.to(index_dtype(vocab_size)).contiguous().cpu(),
               "labels": labels.long().contiguous().cpu()}
    atomic_write(Path(directory) / shard_file(shard), lambda tmp: save_file(tensors, str(tmp)))


@dataclass
class TokenCache:
    """A complete cache in memory: indices (M, A, N) in the compact dtype, labels (M,) int64."""

    manifest: TokenCacheManifest
    indices: Tensor
    labels: Tensor

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "TokenCache":
        from safetensors.torch import load_file

        directory = Path(directory)
        manifest = read_manifest(directory)
        if not manifest.complete:
            raise ValueError(f"token cache {directory} is incomplete: run `python -m generator.tokenize_dataset` "
                             "again with the same settings to finish it (finished shards are kept)")
        shards = [load_file(str(directory / shard_file(k))) for k in range(manifest.num_shards)]
        indices = torch.cat([s["indices"] for s in shards])
        labels = torch.cat([s["labels"] for s in shards])
        expected = (manifest.num_items, len(manifest.augmentations), manifest.num_indices)
        if tuple(indices.shape) != expected or labels.shape != (manifest.num_items,):
            raise ValueError(f"token cache {directory} holds indices {tuple(indices.shape)} / labels "
                             f"{tuple(labels.shape)}, its manifest says {expected}")
        return cls(manifest, indices, labels)

    def __len__(self) -> int:
        return self.indices.shape[0]


def cache_views(flip: bool = False, jitter_views: int = 0, jitter_strength: float = 1.0) -> list[str]:
    """The views a cache stores per image: the image, its horizontal flip, jittered copies."""
    if not isinstance(jitter_views, int) or jitter_views < 0:
        raise ValueError(f"jitter_views must be an integer >= 0, got {jitter_views!r}")
    if jitter_views and not 0 < jitter_strength <= 1:
        raise ValueError(f"jitter_strength must be in (0, 1], got {jitter_strength!r}")
    return [*(AUGMENTATIONS_FLIP if flip else ("none",)),
            *(f"jitter{k}x{jitter_strength:g}" for k in range(1, jitter_views + 1))]


def tokenize_to_cache(tokenizer: Any, dataset: Dataset, directory: str | os.PathLike, *, class_names: list[str],
                      flip: bool = False, jitter_views: int = 0, jitter_strength: float = 1.0,
                      shard_size: int = 10_000, batch_size: int = 64, num_workers: int = 0, source: str = "",
                      progress: bool = True) -> TokenCacheManifest:
    """Encode ``dataset`` (items (image (3,H,W) in [-1,1], label)) with ``tokenizer`` (a FlowMo) into
    ``directory``; finished shards of an earlier run with the same settings are skipped.

    ``jitter_views`` adds that many copies of each image under a small random rotation, scale and
    shift (:func:`imagedata.random_affine` at ``jitter_strength`` times its default range of
    10°, 10 % and 8 % of the side; seeded per shard): more distinct token sequences for a small
    dataset, so a generator learns the class rather than its few images. Too strong a jitter
    moves the learnt distribution away from the data's own (centred digits).
    """
    from tqdm.auto import tqdm

    if shard_size <= 0 or batch_size <= 0:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size} and {batch_size}")
    directory = Path(directory)
    config = tokenizer.config
    manifest = TokenCacheManifest(
        tokenizer_hash=config.architecture_hash(), num_indices=config.num_indices, vocab_size=config.vocab_size,
        num_classes=len(class_names), class_names=list(class_names), num_items=len(dataset), shard_size=shard_size,
        augmentations=cache_views(flip, jitter_views, jitter_strength), source=source,
        encoder_fingerprint=encoder_fingerprint(tokenizer))
    if (directory / MANIFEST_FILE).is_file():
        existing = read_manifest(directory)
        if not existing.same_content(manifest):
            raise ValueError(f"{directory} already holds a token cache with different settings "
                             f"({asdict(existing)}); choose another output directory or delete it")
    write_manifest(directory, manifest)

    todo = [k for k in range(manifest.num_shards) if not (directory / shard_file(k)).is_file()]
    done_items = manifest.num_items - sum(len(manifest.shard_range(k)) for k in todo)
    device = next(tokenizer.parameters()).device
    tokenizer.eval()
    with tqdm(total=manifest.num_items, initial=done_items, desc="tokenizing", unit="img", disable=not progress) as bar:
        for shard in todo:
            loader = DataLoader(Subset(dataset, list(manifest.shard_range(shard))), batch_size=batch_size,
                                shuffle=False, num_workers=loader_workers(num_workers))
            shard_indices, shard_labels = [], []
            jitter = torch.Generator().manual_seed(JITTER_SEED + shard)
            background = background_of(dataset)
            for images, labels in loader:
                images = images.to(device)
                with torch.no_grad():
                    views = [images, images.flip(-1)] if flip else [images]
                    views += [random_affine(images.cpu(), jitter, max_degrees=10.0 * jitter_strength,
                                            max_scale=0.1 * jitter_strength, max_shift=0.08 * jitter_strength,
                                            fill=background).to(device) for _ in range(jitter_views)]
                    shard_indices.append(torch.stack([tokenizer.tokenize(v).cpu() for v in views], dim=1))
                shard_labels.append(torch.as_tensor(labels))
                bar.update(images.shape[0])
            write_shard(directory, shard, torch.cat(shard_indices), torch.cat(shard_labels), manifest.vocab_size)
    manifest.complete = True
    write_manifest(directory, manifest)
    return manifest


class TokenBatches:
    """Deterministic shuffled mini-batches from an in-memory token cache.

    Batch number ``b`` is a pure function of (seed, b, rank): epoch e uses the permutation and
    augmentation draws of a generator seeded with (seed, e); each DDP rank takes a disjoint
    stride of it. Resuming therefore needs only the batch counter.
    """

    def __init__(self, cache: TokenCache, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        per_rank = len(cache) // world_size
        if batch_size <= 0 or per_rank < batch_size:
            raise ValueError(f"batch size {batch_size} per process needs at least {batch_size * world_size} cached "
                             f"items for {world_size} process(es), the cache has {len(cache)}")
        self.cache, self.batch_size, self.seed = cache, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = per_rank // batch_size
        self._epoch: int | None = None
        self._order: Tensor | None = None
        self._augmentation: Tensor | None = None

    def _prepare_epoch(self, epoch: int) -> None:
        if epoch == self._epoch:
            return
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.cache), generator=generator)
        self._augmentation = torch.randint(self.cache.indices.shape[1], (len(self.cache),), generator=generator)
        self._order = order[self.rank::self.world_size]
        self._epoch = epoch

    def batch(self, number: int) -> tuple[Tensor, Tensor]:
        """Batch ``number`` (0, 1, ...) -> indices (B, N) int64, labels (B,) int64."""
        epoch, position = divmod(number, self.batches_per_epoch)
        self._prepare_epoch(epoch)
        items = self._order[position * self.batch_size:(position + 1) * self.batch_size]
        rows = self.cache.indices[items, self._augmentation[items]]
        return rows.long(), self.cache.labels[items]
