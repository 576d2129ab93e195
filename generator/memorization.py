"""Memorization and diversity of generated samples, each beside the same number for real data.

A generator that copies its training set or collapses to one sample per class can still score
a high class accuracy and a fair FID on small data. These measure what those hide:

- **exact copies**: the share of generated token sequences identical to the token sequence of
  a training image (the token cache holds them);
- **nearest-training-image distance**: how close each sample is to its nearest training image,
  against the same distance for held-out real images (a copying generator sits far below it);
- **near duplicates**: the share of samples with another sample of their class closer than the
  1st percentile of within-class distances between real images, against the same share for real
  images at the same count per class, averaged over ``REAL_DRAWS`` draws (mode collapse pushes it up);
- **within-class diversity**: mean pairwise distance within a class, against real images.

Distances are RMS pixel differences of thumbnails (at most 32 px, values in [0, 1]): literal
closeness, which is what copying and collapse are about. :func:`near_duplicates_beside_real`
takes any per-image vectors, e.g. digits mapped back to their own 8×8 space
(:mod:`evaluation.digit_space`); :func:`near_duplicates_size_matched` is the same measure where real
classes can be smaller than the samples' (emoji): both sides drawn at min(samples, real) a class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

THUMBNAIL_SIZE = 32
DUPLICATE_PERCENTILE = 1.0
# Real subsets averaged for the baseline: one draw of 50 real digits per class moves the
# near-duplicate rate by about ±0.03 (8×8 space), as much as the effects being measured.
REAL_DRAWS = 20


def thumbnails(images: Tensor, size: int = THUMBNAIL_SIZE) -> Tensor:
    """uint8 images (N,3,H,W) -> float (N, 3*s*s) in [0,1], s = min(size, H) (area-averaged)."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 (N,3,H,W) images, got {images.dtype} {tuple(images.shape)}")
    x = images.float() / 255.0
    if x.shape[-1] > size or x.shape[-2] > size:
        x = F.adaptive_avg_pool2d(x, (min(size, x.shape[-2]), min(size, x.shape[-1])))
    return x.flatten(1)


def rms_distances(a: Tensor, b: Tensor, chunk: int = 1024) -> Tensor:
    """RMS distances between rows: a (N, D), b (M, D) -> (N, M) float32."""
    rows = []
    for start in range(0, a.shape[0], chunk):
        rows.append(torch.cdist(a[start:start + chunk].float(), b.float()) / a.shape[1] ** 0.5)
    return torch.cat(rows) if rows else a.new_zeros((0, b.shape[0]))


def nearest_distance(queries: Tensor, keys: Tensor) -> Tensor:
    """Distance from each query (N, D) to its nearest key (M, D) -> (N,)."""
    return rms_distances(queries, keys).min(dim=1).values


def within_class_pair_distances(features: Tensor, labels: Tensor) -> list[Tensor]:
    """Per class: the distance matrix (n_c, n_c) of its items, the diagonal set to +inf."""
    out = []
    for label in labels.unique():
        members = features[labels == label]
        dist = rms_distances(members, members)
        dist.fill_diagonal_(float("inf"))
        out.append(dist)
    return out


def duplicate_threshold(real: Tensor, labels: Tensor, percentile: float = DUPLICATE_PERCENTILE) -> float:
    """The ``percentile``-th percentile of within-class pairwise distances of real items."""
    pairs = [d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)] for d in
             within_class_pair_distances(real, labels)]
    values = torch.cat(pairs)
    if values.numel() == 0:
        raise ValueError("need at least two real items of one class for a duplicate threshold")
    return float(np.percentile(values.numpy(), percentile))


def near_duplicate_rate(features: Tensor, labels: Tensor, threshold: float) -> float:
    """Share of items whose nearest other item of the same class is closer than ``threshold``."""
    flagged = sum(int((d.min(dim=1).values < threshold).sum()) for d in within_class_pair_distances(features, labels))
    return flagged / max(1, len(labels))


def within_class_diversity(features: Tensor, labels: Tensor) -> float:
    """Mean pairwise distance within each class, averaged over classes."""
    means = []
    for dist in within_class_pair_distances(features, labels):
        finite = dist[torch.isfinite(dist)]
        if finite.numel():
            means.append(float(finite.mean()))
    return float(np.mean(means)) if means else 0.0


def exact_copies(generated: Tensor, training: Tensor) -> Tensor:
    """Which generated token sequences (N, L) equal some training sequence (M, L) -> (N,) bool."""
    if generated.shape[1:] != training.shape[1:]:
        raise ValueError(f"token sequences of length {tuple(generated.shape[1:])} vs training "
                         f"{tuple(training.shape[1:])}: not from the same tokenizer")
    known = {row.tobytes() for row in training.to(torch.int64).numpy()}
    return torch.tensor([row.tobytes() in known for row in generated.to(torch.int64).numpy()], dtype=torch.bool)


def per_class_subset(labels: Tensor, per_class: int, seed: int = 0) -> Tensor:
    """Indices of up to ``per_class`` items of each class, drawn without replacement (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(picks).sort().values


def near_duplicates_beside_real(features: Tensor, labels: Tensor, real: Tensor, real_labels: Tensor,
                                seed: int = 0, draws: int = REAL_DRAWS) -> dict[str, float]:
    """Near-duplicate rate of samples (N, D) and of real items (M, D) at the samples' count per class.

    One threshold for both: the 1st percentile of within-class distances among all real items.
    The real rate is the mean over ``draws`` subsets (seeds ``seed``..``seed + draws - 1``).
    """
    if features.shape[1:] != real.shape[1:]:
        raise ValueError(f"samples of {tuple(features.shape[1:])} vs real items of {tuple(real.shape[1:])}: "
                         "compare in the same space")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    threshold = duplicate_threshold(real, real_labels)
    per_class = int(torch.bincount(labels).max())
    real_rates = [near_duplicate_rate(real[pick], real_labels[pick], threshold)
                  for pick in (per_class_subset(real_labels, per_class, seed + i) for i in range(draws))]
    return {"near_duplicate_rate": near_duplicate_rate(features, labels, threshold),
            "near_duplicate_rate_real": float(np.mean(real_rates)), "duplicate_threshold": threshold,
            "real_per_class": min(per_class, int(torch.bincount(real_labels).max()))}


def draw_per_class(labels: Tensor, counts: Mapping[int, int], generator: torch.Generator) -> Tensor:
    """Indices of ``counts[c]`` items of each class c, drawn without replacement (raises when a class has fewer)."""
    picks = []
    for label, count in counts.items():
        members = (labels == label).nonzero().flatten()
        if count > len(members):
            raise ValueError(f"class {label}: {count} items asked, {len(members)} available")
        picks.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


def near_duplicates_size_matched(features: Tensor, labels: Tensor, pool: Tensor, pool_labels: Tensor,
                                 seed: int = 0, draws: int = REAL_DRAWS) -> dict[str, float]:
    """Near-duplicate rate of samples (N, D) beside real pool items (M, D) at the same count per class.

    One threshold (:func:`duplicate_threshold` of the pool). Per class of the samples,
    k_c = min(samples, pool items) (classes with k_c < 2 left out); each draw takes k_c samples and k_c pool items
    of every class without replacement; the rates are means over ``draws`` draws (seeds ``seed``...).
    """
    if features.shape[1:] != pool.shape[1:]:
        raise ValueError(f"samples of {tuple(features.shape[1:])} vs real items of {tuple(pool.shape[1:])}: "
                         "compare in the same space")
    threshold = duplicate_threshold(pool, pool_labels)
    counts = {}
    for label in labels.unique().tolist():
        k = min(int((labels == label).sum()), int((pool_labels == label).sum()))
        if k >= 2:
            counts[label] = k
    if not counts:
        raise ValueError("no class has two samples and two real items")
    generated, real = [], []
    for draw in range(draws):
        rng = torch.Generator().manual_seed(seed + draw)
        pick = draw_per_class(labels, counts, rng)
        generated.append(near_duplicate_rate(features[pick], labels[pick], threshold))
        pick = draw_per_class(pool_labels, counts, rng)
        real.append(near_duplicate_rate(pool[pick], pool_labels[pick], threshold))
    return {"near_duplicate_rate": near_duplicate_rate(features, labels, threshold),
            "near_duplicate_rate_matched": float(np.mean(generated)),
            "near_duplicate_rate_real": float(np.mean(real)), "duplicate_threshold": threshold,
            "matched_images": sum(counts.values()), "matched_classes": len(counts)}


@dataclass
class RealSets:
    """Real data the samples are compared with: training images + tokens, and held-out images."""

    train_images: Tensor  # uint8 (M,3,H,W)
    train_labels: Tensor  # int64 (M,)
    heldout_images: Tensor  # uint8 (K,3,H,W)
    train_tokens: Tensor | None = None  # int64 (T, L): the generator's training sequences


def memorization_report(images: Tensor, labels: Tensor, indices: Tensor | None, real: RealSets,
                        seed: int = 0) -> dict[str, float]:
    """Memorization and diversity of samples (uint8 images (N,3,H,W), labels (N,), token indices (N,L)).

    Keys ending in ``_real`` are the same measure on real images: held-out images for the
    nearest-training distance, training images drawn at the samples' count per class for near
    duplicates and diversity (:func:`near_duplicates_beside_real`; diversity from the first draw).
    """
    sample_thumbs, train_thumbs = thumbnails(images), thumbnails(real.train_images)
    if sample_thumbs.shape[1] != train_thumbs.shape[1]:
        raise ValueError(f"samples of shape {tuple(images.shape[1:])} vs real images "
                         f"{tuple(real.train_images.shape[1:])}: compare at the same resolution")
    real_pick = per_class_subset(real.train_labels, int(torch.bincount(labels).max()), seed)
    sample_nn = nearest_distance(sample_thumbs, train_thumbs)
    heldout_nn = nearest_distance(thumbnails(real.heldout_images), train_thumbs)
    report = {
        "nn_train_distance": float(sample_nn.median()),
        "nn_train_distance_real": float(heldout_nn.median()),
        **near_duplicates_beside_real(sample_thumbs, labels, train_thumbs, real.train_labels, seed),
        "diversity": within_class_diversity(sample_thumbs, labels),
        "diversity_real": within_class_diversity(train_thumbs[real_pick], real.train_labels[real_pick]),
    }
    if indices is not None and real.train_tokens is not None:
        report["exact_copy_rate"] = float(exact_copies(indices, real.train_tokens).float().mean())
    return report


MEMORIZATION_LABELS = {  # report key -> (label, key of the real-data reference)
    "exact_copy_rate": ("exact copies of training tokens", None),
    "near_duplicate_rate": ("near-duplicate rate", "near_duplicate_rate_real"),
    "nn_train_distance": ("median distance to nearest training image", "nn_train_distance_real"),
    "diversity": ("within-class diversity", "diversity_real"),
}


def format_memorization(report: dict[str, float]) -> list[str]:
    """One line per measure, with the real-data reference beside it."""
    lines = []
    for key, (label, real_key) in MEMORIZATION_LABELS.items():
        if key not in report:
            continue
        line = f"{label}: {report[key]:.4f}"
        if real_key is not None:
            line += f" (real data: {report[real_key]:.4f})"
        lines.append(line)
    return lines


def load_real_sets(data_cfg: dict, image_size: int, *, tokenizer: torch.nn.Module | None = None,
                   token_cache: str | None = None, max_train_images: int = 20_000,
                   batch_size: int = 64) -> RealSets:
    """Training and held-out images of ``data_cfg`` at ``image_size`` (+ training token sequences).

    Tokens come from ``token_cache`` (every view of every cached image) when given, else from
    encoding the loaded training images with ``tokenizer``. More than ``max_train_images``
    training images are subsampled evenly (then copies of the others go unseen).
    """
    from imagedata import SubsetDataset, build_dataset, stack_dataset
    from runkit.images import tensor_to_uint8

    def load(split: str, limit: int) -> tuple[Tensor, Tensor]:
        """Float images (N,3,H,W) in [-1,1] exactly as the token cache saw them, and labels."""
        dataset = build_dataset({**data_cfg, "subsample": None}, split, image_size, train=False)
        return stack_dataset(SubsetDataset(dataset, limit))

    train_images, train_labels = load("train", max_train_images)
    heldout_images, _ = load("val", max_train_images)
    tokens = None
    if token_cache is not None:
        from .tokens import TokenCache

        tokens = TokenCache.load(token_cache).indices.to(torch.int64).flatten(0, 1)  # every cached view
    elif tokenizer is not None:
        device = next(tokenizer.parameters()).device
        with torch.no_grad():
            tokens = torch.cat([tokenizer.tokenize(train_images[i:i + batch_size].to(device)).cpu()
                                for i in range(0, len(train_images), batch_size)])

    def as_uint8(images: Tensor) -> Tensor:
        return tensor_to_uint8(images).permute(0, 3, 1, 2).contiguous()  # tensor_to_uint8 gives (N,H,W,3)

    return RealSets(as_uint8(train_images), train_labels.long(), as_uint8(heldout_images), tokens)
