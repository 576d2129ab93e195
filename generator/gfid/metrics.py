"""FID / IS / precision-recall / KID of generated samples against a reference, through torch-fidelity."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from evaluation.feature_spaces import FeatureSpace

from .reference import Reference

METRICS = ("fid", "isc", "prc", "kid")
# torch-fidelity's metric names -> the short names in our reports.
_FIDELITY_KEYS = {
    "frechet_inception_distance": "fid",
    "inception_score_mean": "isc_mean",
    "inception_score_std": "isc_std",
    "precision": "precision",
    "recall": "recall",
    "f_score": "f_score",
    "kernel_inception_distance_mean": "kid_mean",
    "kernel_inception_distance_std": "kid_std",
}


def check_metrics(metrics: Iterable[str]) -> set[str]:
    """The requested metric groups as a set; unknown names or none at all raise ValueError."""
    wanted = set(metrics)
    unknown = wanted - set(METRICS)
    if unknown or not wanted:
        raise ValueError(f"metrics {sorted(unknown) or '[]'} not supported; choose from {list(METRICS)}")
    return wanted


def _normalise_metrics(raw: Mapping[str, Any]) -> dict[str, float]:
    return {_FIDELITY_KEYS.get(k, k): float(v) for k, v in raw.items() if k not in ("calibrated", "feature_space")}


def compute_metrics(generated: torch.utils.data.Dataset, reference: Reference, *, metrics: Iterable[str],
                    features: FeatureSpace, batch_size: int = 64, device: str | torch.device | None = None,
                    verbose: bool = True) -> tuple[dict[str, float], bool]:
    """FID / IS / PRC / KID of ``generated`` against ``reference`` in ``features`` (via torch-fidelity).

    Returns (metrics with short names: fid, isc_mean, isc_std, precision, recall, f_score, kid_mean,
    kid_std; calibrated). With reference statistics, FID compares them with the statistics of the
    generated features; PRC and KID always need reference images. Precision/recall use the same
    features as FID (Inception pool features, as the ADM suite does), not torch-fidelity's VGG default.
    """
    from evaluation.metrics import compute_fidelity_metrics

    wanted = check_metrics(metrics)
    paired = (wanted & {"prc", "kid"}) | ({"fid"} & wanted if reference.statistics_file is None else set())
    if paired and reference.images is None:
        raise ValueError(f"{sorted(paired)} need reference images, but the reference is {reference.description} "
                         "(statistics only); drop them from metrics or give an image folder / dataset")
    raw = compute_fidelity_metrics(
        generated, reference.images if paired else None, features=features, fid="fid" in wanted,
        isc="isc" in wanted, prc="prc" in wanted, kid="kid" in wanted,
        fid_statistics_file=reference.statistics_file if "fid" in wanted else None,
        batch_size=batch_size, device=device, verbose=verbose)
    return _normalise_metrics(raw), bool(raw["calibrated"])
