"""Evaluation metrics: PSNR / SSIM on uint8 pixels, LPIPS, and FID / IS / PRC / KID via torch-fidelity.

FID-family metrics take a :class:`~evaluation.feature_spaces.FeatureSpace` (Inception-v3 or a
project-trained classifier). Numbers computed with random backbone weights carry
``calibrated=False`` and are printed through :func:`format_metric`, which marks them UNCALIBRATED.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from runkit.cli import loader_workers
from runkit.fileio import atomic_write

from .feature_spaces import FeatureSpace
from .perceptual import build_lpips

__all__ = [
    "psnr",
    "ssim",
    "LPIPSMetric",
    "compute_fidelity_metrics",
    "compute_feature_statistics",
    "save_reference_statistics",
    "fid_from_statistics",
    "load_reference_statistics",
    "format_metric",
    "UNCALIBRATED_NOTE",
    "KEY_FID",
]

UNCALIBRATED_NOTE = " UNCALIBRATED (random backbone weights)"
KEY_FID = "frechet_inception_distance"


def _to_uint8_values(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [-1,1] -> float64 (B,3,H,W) holding the uint8 values 0..255."""
    if images.dim() != 4:
        raise ValueError(f"expected (B,C,H,W) images, got shape {tuple(images.shape)}")
    return ((images.detach().double() + 1.0) * 127.5).round().clamp(0, 255)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of uint8-rounded images. x, y: (B,3,H,W) in [-1,1] -> (B,) float64.

    Identical images give +inf (as skimage does).
    """
    _check_pair(x, y)
    a, b = _to_uint8_values(x), _to_uint8_values(y)
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    weights = torch.exp(-0.5 * (coords / sigma) ** 2)
    return weights / weights.sum()


def _filter(images: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of (N,1,H,W) -> (N,1,H-k+1,W-k+1)."""
    size = window.numel()
    images = F.conv2d(images, window.view(1, 1, size, 1))
    return F.conv2d(images, window.view(1, 1, 1, size))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of uint8-rounded images (Gaussian window 11, σ 1.5, K1 .01, K2 .03, range 255).

    Averaged over the valid window positions and the channels; equals
    ``skimage.metrics.structural_similarity(..., channel_axis=-1, data_range=255,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` (skimage discards the
    border where the window does not fit, i.e. exactly the 'valid' positions used here).
    x, y: (B,C,H,W) in [-1,1] with H, W >= 11 -> (B,) float64.
    """
    _check_pair(x, y)
    window_size, sigma = 11, 1.5
    batch, channels, height, width = x.shape
    if height < window_size or width < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size}x{window_size}, got {height}x{width}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    window = _gaussian_window(window_size, sigma).to(x.device)
    a = _to_uint8_values(x).reshape(batch * channels, 1, height, width)
    b = _to_uint8_values(y).reshape(batch * channels, 1, height, width)
    mu_a, mu_b = _filter(a, window), _filter(b, window)
    var_a = _filter(a * a, window) - mu_a**2
    var_b = _filter(b * b, window) - mu_b**2
    cov = _filter(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.reshape(batch, -1).mean(1)


class LPIPSMetric:
    """Per-image LPIPS distances with the 'alex' (the usual metric) or 'vgg' network."""

    def __init__(
        self,
        net: str = "alex",
        backbone_weights: str | os.PathLike | None = None,
        allow_random: bool = False,
        device: torch.device | str | None = None,
        option: str = "lpips_weights",
    ):
        self.net = net
        self.model, self.calibrated = build_lpips(net, backbone_weights, allow_random, option)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model.to(self.device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (B,3,H,W) in [-1,1] -> (B,) float32 distances (on the CPU)."""
        _check_pair(x, y)
        x = x.to(self.device, torch.float32)
        y = y.to(self.device, torch.float32)
        return self.model(x, y).flatten().cpu()


def load_reference_statistics(npz_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu (D,), sigma (D,D)) float64 from an .npz with ``mu`` and ``sigma`` (e.g. ADM's reference batch)."""
    path = Path(npz_path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics file not found: {path}")
    with np.load(path) as data:
        missing = {"mu", "sigma"} - set(data.files)
        if missing:
            raise ValueError(f"{path} has no {sorted(missing)} arrays (found {sorted(data.files)})")
        mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not (D,) and (D,D)")
    return mu, sigma


def fid_from_statistics(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians, computed by torch-fidelity."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    def stats(mu: np.ndarray, sigma: np.ndarray) -> dict[str, np.ndarray]:
        return {"mu": np.asarray(mu, dtype=np.float64), "sigma": np.asarray(sigma, dtype=np.float64)}

    return float(fid_statistics_to_metric(stats(mu1, sigma1), stats(mu2, sigma2), verbose=False)[KEY_FID])


def _resolve_device(device: torch.device | str | None) -> bool:
    """torch-fidelity takes a CUDA on/off flag; None means CUDA when available."""
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


_FIDELITY_WORKERS = 4  # torch-fidelity's DataLoader workers (min(4, 2 x CPUs); not configurable)


def _fidelity_options(features: FeatureSpace, batch_size: int, device: torch.device | str | None, verbose: bool,
                      save_cpu_ram: bool) -> dict[str, Any]:
    # cache=False: torch-fidelity unpickles its feature cache with weights_only=False.
    # torch-fidelity runs 4 DataLoader workers or, with save_cpu_ram, none: none where the machine has fewer.
    in_process = save_cpu_ram or loader_workers(_FIDELITY_WORKERS) < _FIDELITY_WORKERS
    return dict(features.fidelity_kwargs(), batch_size=batch_size, cuda=_resolve_device(device), verbose=verbose,
                save_cpu_ram=in_process, cache=False)


def compute_feature_statistics(
    images: str | os.PathLike | Dataset,
    *,
    features: FeatureSpace,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    verbose: bool = True,
    save_cpu_ram: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu (D,), sigma (D,D)) float64 of the FID features of ``features`` (Inception: D = 2048 pool).

    ``images`` is an image folder or a Dataset of uint8 (3,H,W) tensors. Save the result with
    :func:`save_reference_statistics` to reuse it as a ``fid_statistics_file``.
    """
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics
    from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id

    kwargs = dict(_fidelity_options(features, batch_size, device, verbose, save_cpu_ram),
                  input1=str(images) if isinstance(images, (str, os.PathLike)) else images)
    extractor = create_feature_extractor(features.extractor, [features.fid_layer], **kwargs)
    featuresdict = extract_featuresdict_from_input_id(1, extractor, **kwargs)
    stats = fid_featuresdict_to_statistics(featuresdict, features.fid_layer)
    return stats["mu"].astype(np.float64), stats["sigma"].astype(np.float64)


def save_reference_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Write ``mu`` / ``sigma`` to an .npz (the layout :func:`load_reference_statistics` reads)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"reference statistics must be saved as .npz, got {path}")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, mu=mu, sigma=sigma)

    return atomic_write(path, write)


def compute_fidelity_metrics(
    input1: str | os.PathLike | Dataset,
    input2: str | os.PathLike | Dataset | None = None,
    *,
    features: FeatureSpace,
    fid: bool = True,
    isc: bool = False,
    prc: bool = False,
    kid: bool = False,
    fid_statistics_file: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    verbose: bool = True,
    isc_splits: int = 10,
    kid_subset_size: int = 1000,
    save_cpu_ram: bool = False,
) -> dict[str, Any]:
    """FID / IS / PRC / KID of image folders or Datasets of uint8 (3,H,W) tensors, via torch-fidelity.

    ``features`` (:mod:`evaluation.feature_spaces`) is the network whose features every metric uses.
    ``fid_statistics_file`` (.npz with mu/sigma) replaces ``input2`` for FID against reference
    statistics. Keys are torch-fidelity's ("frechet_inception_distance", "inception_score_mean",
    "precision", "recall", "kernel_inception_distance_mean", ...) plus "calibrated" (False with
    random weights) and "feature_space" (the space's label). ``isc_splits`` and
    ``kid_subset_size`` must not exceed the number of images. ``save_cpu_ram`` reads inputs in
    the main process (no DataLoader workers).
    """
    import torch_fidelity

    if not (fid or isc or prc or kid):
        raise ValueError("ask for at least one of fid, isc, prc, kid")

    def as_input(value: str | os.PathLike | Dataset) -> str | Dataset:
        return str(value) if isinstance(value, (str, os.PathLike)) else value

    common = _fidelity_options(features, batch_size, device, verbose, save_cpu_ram)
    results: dict[str, Any] = {}
    pair_fid = fid
    if fid and fid_statistics_file is not None:
        pair_fid = False
        mu_ref, sigma_ref = load_reference_statistics(fid_statistics_file)
        mu, sigma = compute_feature_statistics(input1, features=features, batch_size=batch_size, device=device,
                                               verbose=verbose, save_cpu_ram=save_cpu_ram)
        if mu.shape != mu_ref.shape:
            raise ValueError(f"{fid_statistics_file}: statistics of dimension {mu_ref.shape[0]}, "
                             f"features have {mu.shape[0]}")
        results[KEY_FID] = fid_from_statistics(mu, sigma, mu_ref, sigma_ref)
    needs_input2 = pair_fid or prc or kid
    if needs_input2 and input2 is None:
        raise ValueError("FID, precision/recall and KID need input2 (or fid_statistics_file for FID)")
    if pair_fid or isc or prc or kid:
        kwargs: dict[str, Any] = dict(
            common, input1=as_input(input1), fid=pair_fid, isc=isc, prc=prc, kid=kid,
            isc_splits=isc_splits, kid_subset_size=kid_subset_size,
        )
        if needs_input2:
            kwargs["input2"] = as_input(input2)
        results.update(torch_fidelity.calculate_metrics(**kwargs))
    results["calibrated"] = features.calibrated
    results["feature_space"] = features.label
    return results


def format_metric(name: str, value: float, calibrated: bool, precision: int = 4) -> str:
    """``"name: value"``, marked UNCALIBRATED when computed with random backbone weights."""
    line = f"{name}: {value:.{precision}f}"
    return line if calibrated else line + UNCALIBRATED_NOTE
