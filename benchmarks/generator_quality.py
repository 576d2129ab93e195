"""Are generated samples recognisable, diverse and new? One table per generator, beside real data.

    python benchmarks/generator_quality.py                       # the shipped digits MaskGIT and AR
    python benchmarks/generator_quality.py --generators runs/digits_ar --sampling temperature=1.2 top_k=0

Each generator makes ``--per-class`` samples of every class through the gFID harness
(``generator.gfid.run_gfid``: per-sample seeds, the tokenizer's saved decoder settings, the
generator's saved sampling settings unless ``--sampling`` overrides them) and is scored on:

- class accuracy by the shipped metric classifier (trained on real training digits);
- FID / precision / recall in that classifier's feature space against the val split;
- memorization and diversity (``generator.memorization``): exact copies of training token
  sequences, near-duplicate rate, median distance to the nearest training image, within-class
  diversity;
- images/s of generation (tokens + decoding) on this machine.

The reference row scores real training images, drawn at the same count per class, by the same
measures against the same val split: what a generator that samples the data distribution
would get. The verdict line checks the targets of issue 12 against it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hardware import describe  # noqa: E402

from evaluation.feature_classifier import FeatureClassifier  # noqa: E402
from evaluation.feature_spaces import classifier_feature_space  # noqa: E402
from evaluation.train_classifier import accuracy  # noqa: E402
from generator import load_generator  # noqa: E402
from generator.gfid import (SamplePlan, ShardStore, compute_metrics, make_sample_fn,  # noqa: E402
                            resolve_reference, run_gfid)
from generator.memorization import exact_copies, load_real_sets, memorization_report, per_class_subset  # noqa: E402
from tokenizer import load_flowmo  # noqa: E402

SAMPLING_KEYS = {"maskgit": ("num_steps", "cfg_scale", "temperature", "guidance_schedule", "choice_temperature"),
                 "ar": ("cfg_scale", "temperature", "top_k", "top_p")}  # the options each model reads
COLUMNS = ("class acc", "FID", "precision", "recall", "near-dup", "exact copies", "NN-train dist",
           "diversity", "img/s")


class Uint8Images(torch.utils.data.Dataset):
    """uint8 (N,3,H,W) images as torch-fidelity input."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def parse_sampling(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs -> generate() keyword arguments (numbers parsed, ``null`` -> None)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--sampling takes key=value pairs, got {pair!r}")
        options[key] = None if value == "null" else json.loads(value) if value[:1].isdigit() or value[:1] == "-" \
            else value
    return options


def class_accuracy(classifier: FeatureClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of the metric classifier on uint8 (N,3,H,W) images."""
    return accuracy(classifier, images.float() / 127.5 - 1, labels)


def row(values: dict[str, float], real: dict[str, float] | None = None) -> list[str]:
    def pair(key: str, real_key: str) -> str:
        return f"{values[key]:.3f} ({real[real_key]:.3f})" if real else f"{values[key]:.3f}"

    return [f"{values['class_accuracy']:.3f}", f"{values['fid']:.3f}", f"{values['precision']:.3f}",
            f"{values['recall']:.3f}", pair("near_duplicate_rate", "near_duplicate_rate_real"),
            f"{values.get('exact_copy_rate', float('nan')):.3f}", pair("nn_train_distance", "nn_train_distance_real"),
            pair("diversity", "diversity_real"), f"{values['images_per_second']:.2f}" if "images_per_second" in values
            else "-"]


def verdict(values: dict[str, float], reference: dict[str, float]) -> str:
    checks = {
        "class acc >= 0.95": values["class_accuracy"] >= 0.95,
        "exact copies <= 2 %": values.get("exact_copy_rate", 1.0) <= 0.02,
        "near-dup <= 1.3x real": values["near_duplicate_rate"] <= 1.3 * values["near_duplicate_rate_real"],
        "recall >= 0.8x reference": values["recall"] >= 0.8 * reference["recall"],
        "FID <= 2x reference": values["fid"] <= 2 * reference["fid"],
    }
    return ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=["app/weights/maskgit", "app/weights/ar"])
    parser.add_argument("--tokenizer", default="app/weights/tokenizer")
    parser.add_argument("--classifier", default="app/weights/digits_classifier")
    parser.add_argument("--data", default="digits", help="dataset name of imagedata.build_dataset")
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
    real = load_real_sets(data_cfg, size, tokenizer=tokenizer)
    out_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="generator_quality_"))
    cache_dir = out_root / "reference_cache"
    reference = resolve_reference(data_cfg, image_size=size, cache_dir=cache_dir, split="val",
                                  show_progress_bar=False)
    overrides = parse_sampling(args.sampling)

    print(f"\n{describe()}; {args.per_class} samples per class; features: {features.label} "
          f"({classifier.config.extra.get('val_accuracy', float('nan')):.4f} "
          f"held-out accuracy); decoder: {tokenizer.decode_settings()}")
    print("near-dup, NN-train dist and diversity: generated (real data at the same count per class)\n")
    print("| model | sampling | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---:|" * len(COLUMNS))

    # Reference: real training images at the samples' count per class, against the same val split.
    labels = real.train_labels
    pick = per_class_subset(labels, args.per_class, args.seed)
    real_images, real_labels = real.train_images[pick], labels[pick]
    ref_metrics, _ = compute_metrics(Uint8Images(real_images), reference, metrics=("fid", "prc"), features=features,
                                     verbose=False)
    # Copies and nearest-training distance of real data are those of the held-out images.
    with torch.no_grad():
        heldout_tokens = tokenizer.tokenize(real.heldout_images.float() / 127.5 - 1)
    ref_values = {**ref_metrics, "class_accuracy": class_accuracy(classifier, real_images, real_labels),
                  **memorization_report(real_images, real_labels, None, real, seed=args.seed + 1),
                  "exact_copy_rate": float(exact_copies(heldout_tokens, real.train_tokens).float().mean())}
    ref_values["nn_train_distance"] = ref_values["nn_train_distance_real"]
    print("| real train images (reference; copies and NN-train dist: held-out images) | - | "
          + " | ".join(row(ref_values)) + " |")

    verdicts = []
    for path in args.generators:
        model = load_generator(path).eval()
        model.check_tokenizer(tokenizer.config)
        settings = model.sampling_settings(**overrides)
        sample_fn = make_sample_fn(model, tokenizer, overrides)
        report = run_gfid(sample_fn, num_samples=args.per_class * model.num_classes, num_classes=model.num_classes,
                          out_dir=out_root / Path(path).name, reference=reference.images, features=features,
                          memorization=lambda _: real, batch_size=args.batch_size, seed=args.seed,
                          metrics=("fid", "prc"), overwrite=True, save_png=False, write_npz=False, verbose=False,
                          settings={"sampling": settings})
        plan = SamplePlan(num_samples=report.num_samples, num_classes=report.num_classes, seed=args.seed,
                          batch_size=args.batch_size)
        arrays = ShardStore(report.out_dir, plan).read_all()
        samples = (torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2), torch.from_numpy(arrays["labels"]).long())
        values = {**report.metrics, **report.memorization, "images_per_second": report.images_per_second,
                  "class_accuracy": class_accuracy(classifier, *samples)}
        shown = {k: settings[k] for k in SAMPLING_KEYS[model.model_type] if settings[k] is not None}
        print(f"| {model.model_type} ({path}) | {shown} | " + " | ".join(row(values, values)) + " |")
        verdicts.append(f"{model.model_type}: {verdict(values, ref_values)}")
    print()
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
