"""Are generated samples recognisable, diverse and new? One table per generator, beside real data.

    python benchmarks/generator_quality.py                       # the shipped digits MaskGIT and AR
    python benchmarks/generator_quality.py --tokenizer app/weights/tokenizer_distilled   # the demo's decoder
    python benchmarks/generator_quality.py --generators runs/digits_ar --sampling temperature=1.2 top_k=0

Each generator makes ``--per-class`` samples of every class through the gFID harness
(``generator.gfid.run_gfid``: per-sample seeds, the tokenizer's saved decoder settings, the
generator's saved sampling settings unless ``--sampling`` overrides them) and is scored on:

- class accuracy by the shipped metric classifier (trained on real training digits);
- FID / precision / recall in that classifier's feature space against the val split;
- memorization and diversity (``generator.memorization``): exact copies of training token
  sequences (of every view in ``--token-cache`` when given, else of the training images),
  near-duplicate rate, median distance to the nearest training image, within-class diversity;
- on digits, the same in the dataset's own space (``evaluation.digit_space``): every image mapped
  back to 8×8 in 0..16, class accuracy by an SVM fitted on the raw 8×8 training digits, and the
  near-duplicate rate there (at 32 px the decoder's texture makes samples look more varied than
  they are);
- images/s of generation (tokens + decoding) on this machine.

The reference row scores real training images, drawn at the same count per class, by the same
measures against the same val split: what a generator that samples the data distribution
would get. The verdict line checks the targets of issues 12 and 26 against it. The row below it
scores those images encoded and decoded by ``--tokenizer``: what a generator that samples the
training images' tokens perfectly would get through that decoder (the ceiling of any generator).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hardware import describe  # noqa: E402

from evaluation.digit_space import digit_space_accuracy, held_out_accuracy, to_digit_space  # noqa: E402
from evaluation.feature_classifier import FeatureClassifier  # noqa: E402
from evaluation.feature_spaces import classifier_feature_space  # noqa: E402
from evaluation.train_classifier import accuracy  # noqa: E402
from generator import load_generator  # noqa: E402
from generator.gfid import (GfidReport, SamplePlan, ShardStore, compute_metrics, make_sample_fn,  # noqa: E402
                            resolve_reference, run_gfid)
from generator.memorization import (REAL_DRAWS, RealSets, exact_copies, load_real_sets,  # noqa: E402
                                    memorization_report, near_duplicates_beside_real, per_class_subset)
from runkit.images import tensor_to_uint8  # noqa: E402
from tokenizer import load_flowmo  # noqa: E402

SAMPLING_KEYS = {"maskgit": ("num_steps", "cfg_scale", "temperature", "guidance_schedule", "choice_temperature",
                             "remove_smoothing_floor"),
                 "ar": ("cfg_scale", "temperature", "top_k", "top_p", "remove_smoothing_floor")}  # what each reads
COLUMNS = ("class acc", "class acc 8×8", "FID", "precision", "recall", "near-dup 32 px", "near-dup 8×8",
           "exact copies", "NN-train dist", "diversity", "img/s")
DEFINITIONS = """\
class acc: the metric classifier ({classifier}).
near-dup: share of samples whose nearest other sample of the same class is closer (RMS distance) than the 1st
  percentile of within-class distances between all real training images; (x): the same rate of real training
  images drawn at the same count per class, mean of {draws} draws. 32 px: on the images as generated.
NN-train dist, diversity (32 px): median distance to the nearest training image, mean within-class distance;
  (x) real data. Exact copies: samples whose token sequence equals one the generator trained on.
"""
DIGIT_SPACE_DEFINITIONS = """\
8×8: every image mapped back to the digits dataset's own 8×8, 0..16 space (the least-squares inverse of its
  upscaling, evaluation.digit_space). class acc 8×8: an RBF SVM fitted on the raw 8×8 training digits alone
  (held-out accuracy {svm:.3f}); near-dup 8×8: the rate above, measured there.
"""


class Uint8Images(torch.utils.data.Dataset):
    """uint8 (N,3,H,W) images as torch-fidelity input."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def parse_sampling(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs -> generate() keyword arguments: a JSON value (number, ``true``, ``false``, ``null``)
    where it parses as one, else the text (``guidance_schedule=linear``)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--sampling takes key=value pairs, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@dataclass
class Samples:
    """What :func:`generate_samples` made: the images as a user gets them and the tokens behind them."""

    images: torch.Tensor  # uint8 (N,3,H,W)
    labels: torch.Tensor  # int64 (N,): the generator's class ids
    tokens: torch.Tensor | None  # int64 (N,L) token indices, or None
    report: GfidReport  # run_gfid's: metrics against the reference, images/s, memorization if asked
    settings: dict[str, Any]  # the sampling settings generate() ran with (saved defaults + overrides)


def generate_samples(model: torch.nn.Module, tokenizer: torch.nn.Module, overrides: Mapping[str, Any], *,
                     per_class: int, out_dir: Path, reference: str | Path | Mapping[str, Any], features: Any,
                     batch_size: int = 50, seed: int = 0, classes: Sequence[int] | None = None,
                     metrics: Sequence[str] = ("fid", "prc"),
                     memorization: Callable[[int], RealSets] | None = None) -> Samples:
    """``per_class`` samples of every class of ``model`` (or of ``classes`` only) through the gFID harness.

    ``generator.gfid.run_gfid`` with ``make_sample_fn``: per-sample seeds, the generator's saved sampling
    settings unless ``overrides`` change them, the tokenizer's saved decoder settings; the same seeds give
    the same tokens whatever the decoder. Metrics are computed against ``reference`` in ``features``;
    ``memorization`` (real sets for :func:`generator.memorization.memorization_report`) only with every class.
    """
    settings = model.sampling_settings(**overrides)
    sample_fn = make_sample_fn(model, tokenizer, overrides)
    chosen = torch.arange(model.num_classes) if classes is None else torch.as_tensor(list(classes), dtype=torch.long)
    extra: dict[str, Any] = {}
    if classes is not None:
        if memorization is not None:
            raise ValueError("memorization is measured on the plan's class positions: with classes, measure it "
                             "on the returned samples instead")
        whole = sample_fn

        def sample_fn(positions: torch.Tensor, seeds: torch.Tensor) -> Any:  # plan positions -> class ids
            return whole(chosen[positions], seeds)

        extra["classes"] = chosen.tolist()
    names = [model.class_names[int(c)] for c in chosen]
    report = run_gfid(sample_fn, num_samples=per_class * len(chosen), num_classes=len(chosen), out_dir=out_dir,
                      reference=reference, features=features, memorization=memorization, batch_size=batch_size,
                      seed=seed, metrics=metrics, class_names=names, overwrite=True, save_png=False,
                      write_npz=False, verbose=False, settings={"sampling": settings, **extra})
    plan = SamplePlan(num_samples=report.num_samples, num_classes=report.num_classes, seed=seed,
                      batch_size=batch_size)
    arrays = ShardStore(report.out_dir, plan).read_all()
    tokens = torch.from_numpy(arrays["tokens"]).long() if "tokens" in arrays else None
    labels = chosen[torch.from_numpy(arrays["labels"]).long()]
    return Samples(torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2), labels, tokens, report, settings)


def reconstruct_uint8(tokenizer: torch.nn.Module, images: torch.Tensor, batch_size: int, seed: int,
                      device: torch.device) -> torch.Tensor:
    """uint8 (N,3,H,W) images encoded and decoded at the tokenizer's saved settings (seeded noise) -> same."""
    torch.manual_seed(seed)
    with torch.no_grad():
        decoded = torch.cat([tokenizer.reconstruct(images[i:i + batch_size].to(device).float() / 127.5 - 1).cpu()
                             for i in range(0, len(images), batch_size)])
    return tensor_to_uint8(decoded).permute(0, 3, 1, 2).contiguous()


def sampling_shown(model: torch.nn.Module, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling settings ``model`` reads, without the unset ones nor, for a model trained without label
    smoothing, the floor switch that does nothing to it (for tables)."""
    keys = [k for k in SAMPLING_KEYS[model.model_type] if k != "remove_smoothing_floor" or model.config.label_smoothing]
    return {k: settings[k] for k in keys if settings[k] is not None}


def class_accuracy(classifier: FeatureClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of the metric classifier on uint8 (N,3,H,W) images."""
    return accuracy(classifier, images.float() / 127.5 - 1, labels)


def row(values: dict[str, float], real: dict[str, float] | None = None) -> list[str]:
    def pair(key: str, real_key: str) -> str:
        if key not in values:
            return "-"
        return f"{values[key]:.3f} ({real[real_key]:.3f})" if real else f"{values[key]:.3f}"

    def single(key: str) -> str:
        return f"{values[key]:.3f}" if key in values else "-"

    return [single("class_accuracy"), single("class_accuracy_8x8"), single("fid"), single("precision"),
            single("recall"), pair("near_duplicate_rate", "near_duplicate_rate_real"),
            pair("near_duplicate_rate_8x8", "near_duplicate_rate_real_8x8"), single("exact_copy_rate"),
            pair("nn_train_distance", "nn_train_distance_real"), pair("diversity", "diversity_real"),
            f"{values['images_per_second']:.2f}" if "images_per_second" in values else "-"]


def digit_space_values(images: torch.Tensor, labels: torch.Tensor, real: RealSets, seed: int) -> dict[str, float]:
    """Class accuracy and near duplicates of uint8 digit images in the dataset's own 8×8 space."""
    near = near_duplicates_beside_real(to_digit_space(images), labels, to_digit_space(real.train_images),
                                       real.train_labels, seed)
    return {"class_accuracy_8x8": digit_space_accuracy(images, labels),
            "near_duplicate_rate_8x8": near["near_duplicate_rate"],
            "near_duplicate_rate_real_8x8": near["near_duplicate_rate_real"]}


def verdict(values: dict[str, float], reference: dict[str, float]) -> str:
    checks = {
        "class acc >= 0.95": values["class_accuracy"] >= 0.95,
        "exact copies <= 2 %": values.get("exact_copy_rate", 1.0) <= 0.02,
        "near-dup 32 px <= 1.3x real": values["near_duplicate_rate"] <= 1.3 * values["near_duplicate_rate_real"],
        "recall >= 0.8x reference": values["recall"] >= 0.8 * reference["recall"],
        "FID <= 2x reference": values["fid"] <= 2 * reference["fid"],
    }
    if "class_accuracy_8x8" in values:
        checks["class acc 8×8 >= 0.95"] = values["class_accuracy_8x8"] >= 0.95
        checks["near-dup 8×8 <= 1.3x real"] = (values["near_duplicate_rate_8x8"]
                                                <= 1.3 * values["near_duplicate_rate_real_8x8"])
    return ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=["app/weights/maskgit", "app/weights/ar"])
    parser.add_argument("--tokenizer", default="app/weights/tokenizer")
    parser.add_argument("--classifier", default="app/weights/digits_classifier")
    parser.add_argument("--data", default="digits", help="dataset name of imagedata.build_dataset")
    parser.add_argument("--token-cache", default=None,
                        help="the generators' token cache: exact copies of any cached view count (default: "
                             "copies of the training images' tokens only)")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--sampling", nargs="*", default=[], help="generate() overrides, e.g. cfg_scale=1.5 top_k=0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--out", default=None, help="keep the sample folders here (default: a temp dir)")
    args = parser.parse_args()

    tokenizer = load_flowmo(args.tokenizer).eval()
    size = tokenizer.config.image_size
    features = classifier_feature_space(args.classifier)
    classifier = FeatureClassifier.from_pretrained(args.classifier)
    data_cfg = {"name": args.data}
    real = load_real_sets(data_cfg, size, tokenizer=tokenizer, token_cache=args.token_cache)
    digits = args.data == "digits"  # the 8×8 space is the digits dataset's own
    out_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="generator_quality_"))
    cache_dir = out_root / "reference_cache"
    reference = resolve_reference(data_cfg, image_size=size, cache_dir=cache_dir, split="val",
                                  show_progress_bar=False)
    overrides = parse_sampling(args.sampling)

    print(f"\n{describe()}; {args.per_class} samples per class; features: {features.label} "
          f"({classifier.config.extra.get('val_accuracy', float('nan')):.4f} "
          f"held-out accuracy); decoder: {tokenizer.decode_settings()}")
    print(f"copies of: {args.token_cache or 'the training images tokenized'} ({len(real.train_tokens)} sequences)")
    print(DEFINITIONS.format(classifier=args.classifier, draws=REAL_DRAWS), end="")
    print(DIGIT_SPACE_DEFINITIONS.format(svm=held_out_accuracy()) if digits else "")
    print("| model | sampling | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---:|" * len(COLUMNS))

    # Reference: real training images at the samples' count per class, against the same val split.
    labels = real.train_labels
    pick = per_class_subset(labels, args.per_class, args.seed)
    real_images, real_labels = real.train_images[pick], labels[pick]
    def score_real(images: torch.Tensor) -> dict[str, float]:
        """The measures of uint8 images of ``real_labels`` that are not samples: real ones, or real ones decoded."""
        metrics, _ = compute_metrics(Uint8Images(images), reference, metrics=("fid", "prc"), features=features,
                                     verbose=False)
        values = {**metrics, "class_accuracy": class_accuracy(classifier, images, real_labels),
                  **memorization_report(images, real_labels, None, real, seed=args.seed + 1)}
        if digits:
            values.update(digit_space_values(images, real_labels, real, seed=args.seed + 1))
        return values

    # Copies and nearest-training distance of real data are those of the held-out images.
    with torch.no_grad():
        heldout_tokens = tokenizer.tokenize(real.heldout_images.float() / 127.5 - 1)
    ref_values = {**score_real(real_images),
                  "exact_copy_rate": float(exact_copies(heldout_tokens, real.train_tokens).float().mean())}
    ref_values["nn_train_distance"] = ref_values["nn_train_distance_real"]
    print("| real train images (reference; copies and NN-train dist: held-out images) | - | "
          + " | ".join(row(ref_values)) + " |")
    # The same images encoded and decoded: what a generator that samples the training tokens perfectly scores.
    ceiling = score_real(reconstruct_uint8(tokenizer, real_images, args.batch_size, args.seed, torch.device("cpu")))
    print("| the same real images through the tokenizer (encode + decode: a perfect generator's score) | - | "
          + " | ".join(row(ceiling, ceiling)) + " |")

    verdicts = []
    for path in args.generators:
        model = load_generator(path).eval()
        model.check_tokenizer(tokenizer.config)
        made = generate_samples(model, tokenizer, overrides, per_class=args.per_class,
                                out_dir=out_root / Path(path).name, reference=reference.images, features=features,
                                batch_size=args.batch_size, seed=args.seed, memorization=lambda _: real)
        report, samples = made.report, (made.images, made.labels)
        values = {**report.metrics, **report.memorization, "images_per_second": report.images_per_second,
                  "class_accuracy": class_accuracy(classifier, *samples)}
        if digits:
            values.update(digit_space_values(*samples, real, seed=args.seed))
        shown = sampling_shown(model, made.settings)
        print(f"| {model.model_type} ({path}) | {shown} | " + " | ".join(row(values, values)) + " |")
        verdicts.append(f"{model.model_type}: {verdict(values, ref_values)}")
    print()
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
