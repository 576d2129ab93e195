"""The Evaluate tab: a small gFID run (FID, IS, precision/recall, memorization) through the project's harness.

The feature space and the real reference default to the domain's own (:mod:`app.domains`): the
digits or emoji metric classifier's features (Inception-v3 where the domain has none) and the
held-out split of its dataset; models loaded from checkpoints need a configured reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from imagedata import DIGIT_NAMES

from .checks import check_decode, check_generate, check_seed
from .decoding import ProgressFn
from .limits import check_int
from .models import DEFAULT_WEIGHTS_DIR, DIGITS_CLASSIFIER_DIR, GENERATOR_LABELS, LoadedModels
from .settings import DemoSettings
from .visualize import metrics_bar_plot

MIN_EVAL_SAMPLES = 10  # Inception Score uses 10 splits


@dataclass
class EvaluationResult:
    """What one Evaluate request returns."""

    metrics: dict[str, float]
    calibrated: bool
    num_samples: int
    seconds: float
    rows: list[list[str]]  # [metric, value] with UNCALIBRATED marks
    plot: Image.Image
    grid: Image.Image | None
    out_dir: str
    summary: str


def evaluate(models: LoadedModels, settings: DemoSettings, work_dir: Path, num_samples: int = 50,
             generator: str = "MaskGIT", steps: int | None = None, cfg: float | None = None,
             temperature: float | None = None, decode_steps: int | None = None, decode_cfg: float | None = None,
             seed: int = 0, progress: ProgressFn | None = None) -> EvaluationResult:
    """A small gFID run (FID, IS, precision/recall) through the project's harness.

    Samples go to ``work_dir/eval/<hash of every setting>``: asking again with the same
    settings reuses the finished shards (the harness resumes), so a repeat is instant.
    """
    import hashlib
    import json

    from generator.gfid import make_sample_fn, run_gfid

    limits = settings.limits
    slot = models.resolve_generator(generator)
    num_samples = check_int("number of samples", num_samples, MIN_EVAL_SAMPLES, limits.max_eval_samples)
    steps, cfg, temperature = check_generate(models, limits, generator, steps, cfg, temperature)
    seed = check_seed(seed)
    decode_steps, decode_cfg = check_decode(limits, models.generation_decoder, decode_steps, decode_cfg)
    reference = _reference(models, settings)
    features = _features(models, settings)
    gen_kwargs = {"num_steps": steps, "cfg_scale": cfg, "temperature": temperature}
    dec_kwargs = {"steps": decode_steps, "cfg": decode_cfg}
    run_settings = {"generator": models.generator_sources[slot],
                    "tokenizer": models.generation_tokenizer_source or models.tokenizer_source,
                    "generate": gen_kwargs, "decode": dec_kwargs, "dtype": settings.dtype,
                    "reference": reference if isinstance(reference, dict) else str(reference),
                    "features": features.tag}
    key = hashlib.sha256(json.dumps([run_settings, num_samples, seed], sort_keys=True).encode()).hexdigest()[:16]
    out_dir = work_dir / "eval" / f"{slot}-n{num_samples}-{key}"
    sample_fn = make_sample_fn(models.generators[slot], models.generation_decoder, gen_kwargs, dec_kwargs)

    def sample(class_ids: Tensor, seeds: Tensor) -> tuple[Tensor, Tensor]:
        with torch.inference_mode():
            return sample_fn(class_ids, seeds)

    def real_sets(image_size: int) -> Any:
        from generator.memorization import load_real_sets

        return load_real_sets(reference, image_size, tokenizer=models.tokenizer)

    report = run_gfid(
        sample, num_samples=num_samples, num_classes=models.num_classes, out_dir=out_dir, reference=reference,
        features=features, memorization=real_sets if isinstance(reference, dict) else None,
        shard_size=max(limits.max_batch, 1), batch_size=limits.max_batch, seed=seed,
        class_names=models.class_names, settings=run_settings, reference_split=settings.eval_reference_split,
        max_reference_images=settings.eval_max_reference_images, cache_dir=work_dir / "gfid-cache",
        write_npz=False, progress=progress, verbose=False)
    rows, plot = _report_table(report, f"{GENERATOR_LABELS[slot]}: {report.num_samples} samples")
    grid_path = report.files.get("grid")
    return EvaluationResult(metrics=dict(report.metrics), calibrated=report.calibrated,
                            num_samples=report.num_samples, seconds=report.wall_seconds, rows=rows, plot=plot,
                            grid=Image.open(grid_path).convert("RGB") if grid_path else None,
                            out_dir=str(out_dir), summary=report.summary())


def _report_table(report: Any, title: str) -> tuple[list[list[str]], Image.Image]:
    """A gFID report as [metric, value] rows (fidelity numbers marked when uncalibrated, memorization
    beside its real-data baseline, run facts) and a bar plot of the fidelity numbers."""
    from generator.gfid import METRIC_LABELS, UNCALIBRATED
    from generator.memorization import MEMORIZATION_LABELS
    from evaluation.feature_spaces import metric_label

    shown = {key: metric_label(label, report.feature_space) for key, label in METRIC_LABELS.items()
             if key in report.metrics}
    mark = "" if report.calibrated else f" {UNCALIBRATED}"
    rows = [[label, f"{report.metrics[key]:.4g}{mark}"] for key, label in shown.items()]
    for key, (label, real_key) in MEMORIZATION_LABELS.items():
        if key in report.memorization:
            real = f" (real data {report.memorization[real_key]:.4g})" if real_key else ""
            rows.append([label, f"{report.memorization[key]:.4g}{real}"])
    rows.append(["samples", str(report.num_samples)])
    rows.append(["reference", report.reference])
    rows.append(["wall time (s)", f"{report.wall_seconds:.1f}"])
    plot = metrics_bar_plot({label: report.metrics[key] for key, label in shown.items()}, title, report.calibrated)
    return rows, plot


def _domain(models: LoadedModels, settings: DemoSettings) -> Any:
    """The DomainSpec of an embedded set, None for models loaded from checkpoints."""
    return settings.domains.get(models.domain) if models.domain else None


def _classifier(models: LoadedModels, settings: DemoSettings) -> str | None:
    """The configured classifier; else the domain's (in its weights dir, else the shipped one), the shipped
    digits classifier for digit generators loaded from checkpoints, else None (Inception-v3)."""
    if settings.feature_classifier is not None:
        return settings.feature_classifier
    spec = _domain(models, settings)
    if spec is not None:
        path = (spec.classifier_dir(models.weights_dir or DEFAULT_WEIGHTS_DIR)
                or spec.classifier_dir(DEFAULT_WEIGHTS_DIR))
        return str(path) if path is not None else None
    if models.class_names == DIGIT_NAMES:
        return str(DEFAULT_WEIGHTS_DIR / DIGITS_CLASSIFIER_DIR)
    return None


def _features(models: LoadedModels, settings: DemoSettings) -> Any:
    """The configured classifier, the domain's classifier (digits, emoji), else Inception-v3."""
    from evaluation.feature_spaces import resolve_feature_space

    return resolve_feature_space(settings.features, classifier=_classifier(models, settings),
                                 inception_weights=settings.inception_weights,
                                 allow_random=settings.allow_random_inception)


def _reference(models: LoadedModels, settings: DemoSettings) -> str | dict[str, Any]:
    """The configured reference, else the domain's dataset (checked present: ``python -m imagedata.prepare
    emoji`` builds data/emoji), or the digits dataset for digit generators loaded from checkpoints."""
    reference = settings.eval_reference
    if reference not in (None, ""):
        return reference
    spec = _domain(models, settings)
    if spec is not None:
        return spec.reference_data()
    if models.class_names == DIGIT_NAMES:
        return {"name": "digits"}
    raise ValueError("no gFID reference configured for these classes: set evaluate.reference=<folder of "
                     "real images or an .npz with mu/sigma, e.g. the ADM ImageNet reference batch>")


def evaluation_plan(models: LoadedModels, settings: DemoSettings) -> str:
    """One line for the Evaluate tab: the feature space and the reference a run of these models would use,
    or why it cannot run (no generator, no reference data)."""
    if not models.generators:
        return "Load a generator to evaluate."
    classifier = _classifier(models, settings) if settings.features != "inception" else None
    if classifier is not None:
        try:  # the name its metrics carry: "gFID (<name> classifier features)"
            import json

            label = f"{json.loads((Path(classifier) / 'config.json').read_text())['name']} classifier features"
        except (OSError, ValueError, KeyError):  # the run itself reports a broken classifier; this only names it
            label = f"classifier {Path(classifier).name}"
        space = f"the **{label}** (`{classifier}`)"
    elif settings.features == "classifier":
        space = "a classifier's features: set `evaluate.feature_classifier=`"
    else:
        space = ("Inception-v3 features" if settings.inception_weights else
                 "Inception-v3 features, UNCALIBRATED without `evaluate.inception_weights=`")
    try:
        reference = _reference(models, settings)
    except ValueError as error:
        spec = _domain(models, settings)
        return f"{spec.label + ' models' if spec is not None else 'These models'}: ⚠ {error}"
    if isinstance(reference, dict):
        where = f" of `{reference['root']}`" if reference.get("root") else ""
        reference = f"the `{settings.eval_reference_split}` split of the {reference.get('name')} dataset{where}"
    else:
        reference = f"`{reference}`"
    return f"Samples are scored in {space} against {reference}."
