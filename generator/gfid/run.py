"""``run_gfid``: one whole gFID run, from the plan through generation to ``report.json``.

With an ``accelerate.Accelerator`` every process generates its own shards; the main process
alone reads and writes the plan and computes the metrics, and its verdicts reach every process.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from evaluation.feature_spaces import FeatureSpace
from runkit.fileio import atomic_write

from ..memorization import RealSets, memorization_report
from .export import write_adm_npz, write_sample_grid
from .generation import ProgressFn, SampleFn, generate_shards
from .metrics import check_metrics, compute_metrics
from .plan import SamplePlan
from .reference import default_cache_dir, resolve_reference
from .report import GfidReport
from .shards import GRID_FILE, PLAN_FILE, REPORT_FILE, ShardImages, ShardStore, jsonable


def run_gfid(sample_fn: SampleFn, *, num_samples: int, num_classes: int, out_dir: str | os.PathLike,
             reference: str | os.PathLike | Mapping[str, Any], features: FeatureSpace,
             memorization: Callable[[int], RealSets] | None = None, shard_size: int = 1000,
             batch_size: int = 50, seed: int = 0,
             metrics: Sequence[str] = ("fid", "isc", "prc"), class_names: Sequence[str] | None = None,
             settings: Mapping[str, Any] | None = None, reference_split: str = "train",
             max_reference_images: int | None = None, cache_dir: str | os.PathLike | None = None,
             save_png: bool = True, write_npz: bool = True, overwrite: bool = False,
             feature_batch_size: int = 64, progress: ProgressFn | None = None, accelerator: Any = None,
             verbose: bool = True) -> GfidReport:
    """Generate ``num_samples`` class-balanced samples (resumably) and score them against ``reference``.

    ``settings`` (the sampling/decoding options and checkpoints behind ``sample_fn``) are stored
    in ``plan.json`` and the report; resuming with different settings is refused. With an
    ``accelerate.Accelerator``, each process generates its shards and the main process computes
    the metrics; every process returns the same report. ``features`` is the network behind the
    metrics (built before generation, so missing weights fail first); with random weights every
    number is marked UNCALIBRATED. ``memorization(image_size)`` gives the real sets that the
    memorization and diversity measures (:mod:`generator.memorization`) compare with.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    rank = accelerator.process_index if accelerator is not None else 0
    world_size = accelerator.num_processes if accelerator is not None else 1
    is_main = rank == 0
    # Bad references fail before hours of generation (missing weights already failed in ``features``).
    reference_cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # A folder or statistics file is checked now; a dataset is exported once the resolution is known.
    resolved = None if isinstance(reference, Mapping) else resolve_reference(
        reference, image_size=0, cache_dir=reference_cache)
    check_metrics(metrics)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
    plan = SamplePlan(num_samples=num_samples, num_classes=num_classes, seed=seed, shard_size=shard_size,
                      batch_size=batch_size)
    settings = dict(settings or {})
    store = ShardStore(out_dir, plan, save_png=save_png)

    def report_progress(fraction: float, message: str) -> None:
        if progress is not None and is_main:
            progress(fraction, message)

    # Only the main process reads/writes the plan; its verdict reaches every rank, so a refused
    # resume stops all of them instead of leaving the others waiting at a barrier.
    plan_error = None
    if is_main:
        try:
            store.check_plan(settings, overwrite=overwrite)
        except ValueError as error:
            plan_error = str(error)
    plan_error = _broadcast(plan_error, accelerator)
    if plan_error is not None:
        raise ValueError(plan_error)

    report_progress(0.0, "generating samples")
    generation_started = time.perf_counter()
    generated = generate_shards(sample_fn, store, rank=rank, world_size=world_size,
                                progress=lambda f, m: report_progress(0.8 * f, m),
                                show_progress_bar=verbose)
    generation_seconds = time.perf_counter() - generation_started
    generated = _sum_over_processes(generated, accelerator)
    generation_seconds = _max_over_processes(generation_seconds, accelerator)
    _barrier(accelerator)

    report = None
    if is_main:
        missing = [k for k in range(plan.num_shards) if not store.is_done(k)]
        if missing:
            raise RuntimeError(f"shards {missing[:10]}{'...' if len(missing) > 10 else ''} of {out_dir} are "
                               "missing after generation")
        files = {"plan": str(out_dir / PLAN_FILE), "shards": str(store.shards_dir)}
        if save_png:
            files["images"] = str(store.images_dir)
        image_size = tuple(int(s) for s in store.image_shape())
        report_progress(0.8, "writing sample grid")
        files["grid"] = str(write_sample_grid(store, out_dir / GRID_FILE, class_names))
        if write_npz:
            report_progress(0.82, "writing ADM-layout npz")
            npz = out_dir / f"samples_{plan.num_samples}x{image_size[0]}x{image_size[1]}x3.npz"
            files["samples_npz"] = str(write_adm_npz(store, npz))
        report_progress(0.85, f"extracting {features.label} features")
        metrics_started = time.perf_counter()
        if resolved is None:
            resolved = resolve_reference(reference, image_size=image_size[0], cache_dir=reference_cache,
                                         split=reference_split, max_reference_images=max_reference_images,
                                         show_progress_bar=verbose)
        device = accelerator.device if accelerator is not None else None
        values, calibrated = compute_metrics(ShardImages(store), resolved, metrics=metrics, features=features,
                                             batch_size=feature_batch_size, device=device, verbose=verbose)
        memorized: dict[str, float] = {}
        if memorization is not None:
            report_progress(0.95, "measuring memorization and diversity")
            memorized = sample_memorization(store, memorization(image_size[0]), seed=seed)
        metrics_seconds = time.perf_counter() - metrics_started
        files["report"] = str(out_dir / REPORT_FILE)
        report = GfidReport(
            metrics=values, calibrated=calibrated, num_samples=plan.num_samples, num_classes=plan.num_classes,
            image_size=image_size, reference=resolved.description,
            settings={"plan": asdict(plan), "metrics": list(metrics), "features": features.tag,
                      **jsonable(settings)},
            generated_this_run=generated, generation_seconds=generation_seconds,
            metrics_seconds=metrics_seconds, wall_seconds=time.perf_counter() - started,
            out_dir=str(out_dir), files=files, feature_space=features.label, memorization=memorized)
        atomic_write(out_dir / REPORT_FILE, lambda tmp: tmp.write_text(json.dumps(report.to_dict(), indent=2)))
        report_progress(1.0, report.summary())
    return _broadcast(report, accelerator)


def sample_memorization(store: ShardStore, real: RealSets, seed: int = 0) -> dict[str, float]:
    """:func:`generator.memorization.memorization_report` of every stored sample."""
    arrays = store.read_all()
    images = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).contiguous()
    tokens = torch.from_numpy(arrays["tokens"]) if "tokens" in arrays else None
    return memorization_report(images, torch.from_numpy(arrays["labels"]).long(), tokens, real, seed=seed)


# ---------------------------------------------------------------------------- accelerate helpers
def _barrier(accelerator: Any) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def _sum_over_processes(value: int, accelerator: Any) -> int:
    if accelerator is None or accelerator.num_processes == 1:
        return value
    return int(accelerator.reduce(torch.tensor([value], device=accelerator.device), reduction="sum").item())


def _max_over_processes(value: float, accelerator: Any) -> float:
    if accelerator is None or accelerator.num_processes == 1:
        return value
    gathered = accelerator.gather(torch.tensor([value], dtype=torch.float64, device=accelerator.device))
    return float(gathered.max().item())


def _broadcast(value: Any, accelerator: Any) -> Any:
    """The main process's ``value`` on every process."""
    if accelerator is None or accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]
