"""Do the emoji generators make recognisable, realistic, new and varied emoji? One table, beside real emoji.

    python benchmarks/emoji_quality.py          # app/weights/emoji_maskgit and emoji_ar, each decoded by the
                                                # generation decoder (emoji_tokenizer_sampling, what the demo
                                                # and the issue's numbers use) and by the reconstruction
                                                # decoder (emoji_tokenizer)
    python benchmarks/emoji_quality.py --classes all
    python benchmarks/emoji_quality.py --generators runs/emoji_maskgit --tokenizers runs/emoji_tok \\
        --classifier runs/emoji_classifier --per-class 20 --out /tmp/emoji_quality

Every generator makes ``--per-class`` samples of each chosen class (default: the 20 classes with the most
training images) the way ``benchmarks/generator_quality.py`` makes them (``generate_samples``: the gFID
harness, per-sample seeds, the generator's saved sampling settings unless ``--sampling`` overrides them),
and decodes the same tokens with every tokenizer of ``--tokenizers`` (their saved decoder settings). Each
(generator, decoder) is scored on four measures, each beside real emoji (definitions are printed with the
table; the targets are issue 25's):

- class accuracy by the emoji metric classifier, over its accuracy on the real held-out emoji (val split,
  the emoji no model trained on, in the training styles): target >= 0.8x;
- FID in that classifier's features against every real training image of the chosen classes, with the
  samples drawn at the val split's size and class mix, over the FID of the real val images: target <= 2x;
- exact copies: samples whose token sequence is that of a training image: target <= 5 %;
- near duplicates: samples with another sample of their class closer, in 32-px pixels, than the 1st
  percentile of real within-class distances, against real subsets of the same size: target <= 1.3x.

Writes one PNG per (generator, decoder) to ``--out`` (a row per class: samples, then real training
images) and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generator_quality import (Uint8Images, class_accuracy, generate_samples, parse_sampling,  # noqa: E402
                               reconstruct_uint8, sampling_shown)
from hardware import describe  # noqa: E402

from evaluation.feature_classifier import FeatureClassifier  # noqa: E402
from evaluation.feature_spaces import FeatureSpace, classifier_feature_space  # noqa: E402
from evaluation.metrics import compute_feature_statistics, save_reference_statistics  # noqa: E402
from generator import load_generator  # noqa: E402
from generator.gfid import compute_metrics  # noqa: E402
from generator.gfid.reference import Reference  # noqa: E402
from generator.memorization import (REAL_DRAWS, RealSets, draw_per_class, duplicate_threshold,  # noqa: E402
                                    exact_copies, load_real_sets, memorization_report,
                                    near_duplicates_size_matched, thumbnails)
from imagedata import build_dataset, stack_dataset  # noqa: E402
from runkit.fileio import atomic_write  # noqa: E402
from runkit.images import tensor_to_uint8  # noqa: E402
from tokenizer import load_flowmo  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "emoji_quality"
FID_DRAWS = 10
TARGETS = {"class_accuracy_ratio": 0.8, "fid_ratio": 2.0, "exact_copy_rate": 0.05, "near_duplicate_ratio": 1.3}
COLUMNS = ("class acc (÷ real val)", "FID@val (÷ real val)", "FID all", "exact copies",
           "near-dup@k (real) (÷)", "near-dup all", "NN-train dist (val)", "diversity (real)", "img/s")
DEFINITIONS = """\
Classes (train/val/test_style images): {classes}
Classifier: {classifier} ({num_classes} classes, {dim}-d features).
Exact copies of: {copies_of}.
Near-duplicate pool: {pool}; threshold {threshold:.4f}; {pool_min}-{pool_max} images a class.
class acc: top-1 accuracy of the classifier (argmax over all classes) on the samples of the chosen classes;
  real val: on the real held-out emoji of those classes ({val_count} images: emoji no model trained on, in the
  training styles); (÷): samples / real val. Target >= {acc:g}x.
FID@val: FID in the classifier's features against the statistics of all {train_count} real training images of the
  chosen classes (centred, no jitter). FID falls with the number of images and moves with the class mix, so the
  samples are drawn at the val split's count per class ({val_count} images, each class's drawn without
  replacement from its N samples), mean ± std over {fid_draws} draws. real val: the val images themselves (emoji
  never trained on, so it also measures how far new emoji sit from the trained ones); real test_style: OpenMoji
  images (another style) drawn the same way. (÷): samples / real val; target <= {fid:g}x. FID all: every
  sample (N per class; not comparable with the real rows). real val through the tokenizer: the val images
  encoded and decoded by each decoder, scored the same way; samples are decoded by it too, so this is what a
  perfect generator would score (the targets stay relative to real val).
exact copies: samples whose token sequence equals that of a training image; real rows: real images whose tokens
  equal a training image's. Target <= {copies:.0%}.
near-dup@k: share of images whose nearest other image of the same class is closer (RMS distance of 32-px pixels
  in [0, 1]) than the 1st percentile of the within-class distances among the real pool. Real classes are small,
  so the rates are size-matched: per class k_c = min(N, pool images of the class) (classes with k_c < 2 left
  out); the generator's rate over k_c of its N samples and the real rate (in brackets) over k_c pool images,
  both drawn without replacement (drawing with replacement would plant exact duplicates in the real subsets),
  each the mean of {draws} draws. Target: samples <= {near:g}x real. near-dup all: all N samples a class.
NN-train dist, diversity: median distance of a sample to its nearest training image of the chosen classes (in
  brackets: the val images'), mean within-class distance (in brackets: training images drawn at N a class).
"""


# ------------------------------------------------------------------------------------------- data
def load_split(data_cfg: Mapping[str, Any], split: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``split`` of the emoji dataset as uint8 (N,3,S,S) images (centred, no jitter) and int64 labels."""
    dataset = build_dataset({**data_cfg, "val_split": split, "subsample": None}, "val", image_size, train=False)
    images, labels = stack_dataset(dataset)
    return tensor_to_uint8(images).permute(0, 3, 1, 2).contiguous(), labels.long()


def choose_classes(spec: str, train_labels: torch.Tensor, class_names: Sequence[str]) -> list[int]:
    """``all``, ``K`` (the K classes with the most training images, largest first, ties by id) or a comma list
    of class names and ids."""
    spec = spec.strip()
    if spec == "all":
        return list(range(len(class_names)))
    if spec.isdigit():
        count = int(spec)
        if not 1 <= count <= len(class_names):
            raise SystemExit(f"--classes {count}: choose 1..{len(class_names)} classes")
        sizes = torch.bincount(train_labels, minlength=len(class_names)).tolist()
        return sorted(range(len(class_names)), key=lambda c: (-sizes[c], c))[:count]
    chosen = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        if item.isdigit() and int(item) < len(class_names):
            chosen.append(int(item))
        elif item in class_names:
            chosen.append(class_names.index(item))
        else:
            raise SystemExit(f"--classes: unknown class {item!r}; classes are {', '.join(class_names)}")
    if len(set(chosen)) != len(chosen) or not chosen:
        raise SystemExit(f"--classes {spec!r}: name each class once")
    return chosen


def check_generator(model: torch.nn.Module, class_names: Sequence[str], path: str) -> None:
    """Refuse a generator whose classes are not the emoji dataset's."""
    if model.num_classes != len(class_names):
        raise SystemExit(f"{path} has {model.num_classes} classes, the emoji dataset {len(class_names)}")
    if model.config.class_names and list(model.config.class_names) != list(class_names):
        differ = next(i for i, (a, b) in enumerate(zip(model.config.class_names, class_names)) if a != b)
        raise SystemExit(f"{path}: class {differ} is {model.config.class_names[differ]!r}, the emoji dataset's "
                         f"{class_names[differ]!r}; was it trained on another build of the dataset?")


def in_classes(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    return torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))


# ---------------------------------------------------------------------------------------- metrics
def fid_at_counts(images: torch.Tensor, labels: torch.Tensor, counts: Mapping[int, int], reference: Reference,
                  features: FeatureSpace, draws: int, seed: int = 0) -> tuple[float, float, list[float]]:
    """FID of ``counts[c]`` images of each class c (uint8 images, drawn without replacement; a class with fewer
    gives all it has) against ``reference``: (mean, std, every draw's FID) over ``draws`` draws."""
    available = {c: min(k, int((labels == c).sum())) for c, k in counts.items() if k > 0}
    values = []
    for draw in range(draws):
        pick = draw_per_class(labels, available, torch.Generator().manual_seed(seed + draw))
        metrics, _ = compute_metrics(Uint8Images(images[pick]), reference, metrics=("fid",), features=features,
                                     verbose=False)
        values.append(metrics["fid"])
    return float(np.mean(values)), float(np.std(values)), values


def verdict(values: Mapping[str, float], real_val: Mapping[str, float]) -> dict[str, bool]:
    """Issue 25's targets: each check's name -> met."""
    acc, fid, copies, near = (TARGETS[k] for k in ("class_accuracy_ratio", "fid_ratio", "exact_copy_rate",
                                                   "near_duplicate_ratio"))
    return {
        f"class acc >= {acc:g}x real val": values["class_accuracy"] >= acc * real_val["class_accuracy"],
        f"FID@val <= {fid:g}x real val": values["fid_matched"] <= fid * real_val["fid"],
        f"exact copies <= {copies:.0%}": values.get("exact_copy_rate", 1.0) <= copies,  # no tokens: not cleared
        f"near-dup <= {near:g}x real":
            values["near_duplicate_rate_matched"] <= near * values["near_duplicate_rate_real"],
    }


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else (1.0 if a == 0 else math.inf)


# ----------------------------------------------------------------------------------------- output
def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_row(values: Mapping[str, Any], real_val: Mapping[str, Any] | None) -> list[str]:
    """The COLUMNS cells of one row (``real_val`` given: with the ratios to it)."""
    get = values.get
    acc = fmt(get("class_accuracy"))
    fid = fmt(get("fid_matched")) + (f" ± {get('fid_matched_std'):.3f}" if get("fid_matched_std") else "")
    near = "-"
    if real_val is not None:
        acc += f" ({ratio(values['class_accuracy'], real_val['class_accuracy']):.2f}x)"
        fid += f" ({ratio(values['fid_matched'], real_val['fid']):.2f}x)"
        near = (f"{values['near_duplicate_rate_matched']:.3f} ({values['near_duplicate_rate_real']:.3f}) "
                f"({ratio(values['near_duplicate_rate_matched'], values['near_duplicate_rate_real']):.2f}x)")
    nn = fmt(get("nn_train_distance")) + (f" ({values['nn_train_distance_real']:.3f})"
                                          if "nn_train_distance_real" in values else "")
    diversity = fmt(get("diversity")) + (f" ({values['diversity_real']:.3f})" if "diversity_real" in values else "")
    copies = "-" if get("exact_copy_rate") is None else f"{values['exact_copy_rate']:.1%}"
    return [acc, fid, fmt(get("fid_all")), copies, near, fmt(get("near_duplicate_rate")), nn, diversity,
            fmt(get("images_per_second"), 1)]


def class_grid(rows: Sequence[tuple[str, torch.Tensor, torch.Tensor]], path: Path, title: str,
               scale: int = 2) -> Path:
    """One row per (class name, samples uint8 (k,3,H,W), real images uint8 (m,3,H,W)): name (lines of at most 24
    characters), samples, gap, real (that column only when some row has real images)."""
    height, width = rows[0][1].shape[-2:]
    cell_h, cell_w, pad, name_w, top = height * scale, width * scale, 2, 150, 28
    samples = max(len(s) for _, s, _ in rows)
    reals = max(len(r) for _, _, r in rows)
    gap = cell_w // 2
    canvas = Image.new("RGB", (name_w + (samples + reals) * (cell_w + pad) + gap, top + len(rows) * (cell_h + pad)),
                       "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black")
    draw.text((name_w, 15), "samples", fill="black")
    if reals:
        draw.text((name_w + samples * (cell_w + pad) + gap, 15), "real training images", fill="black")
    for r, (name, generated, real) in enumerate(rows):
        y = top + r * (cell_h + pad)
        lines = [line[:24] for line in name.split("\n")]
        draw.text((4, y + cell_h // 2 - 5 * len(lines)), "\n".join(lines), fill="black")
        for group, images, x0 in ((0, generated, name_w), (1, real, name_w + samples * (cell_w + pad) + gap)):
            for i, image in enumerate(images):
                picture = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((cell_w, cell_h), Image.NEAREST)
                canvas.paste(picture, (x0 + i * (cell_w + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))


def grid_rows(images: torch.Tensor, labels: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor,
              classes: Sequence[int], names: Sequence[str], count: int, seed: int = 0) -> list[tuple]:
    """Per class: its first ``count`` samples and ``count`` real images drawn without replacement (seeded)."""
    rng = torch.Generator().manual_seed(seed)
    rows = []
    for c in classes:
        members = (real_labels == c).nonzero().flatten()
        pick = members[torch.randperm(len(members), generator=rng)[:count]]
        rows.append((names[c], images[labels == c][:count], real[pick]))
    return rows


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=["app/weights/emoji_maskgit", "app/weights/emoji_ar"])
    parser.add_argument("--tokenizers", nargs="+",
                        default=["app/weights/emoji_tokenizer_sampling", "app/weights/emoji_tokenizer"],
                        help="decoders, each at its saved settings (default: the generation decoder the demo uses, "
                             "then the reconstruction decoder); the first also tokenizes the training images for "
                             "copy detection (a student keeps its teacher's encoder, so the tokens are the same)")
    parser.add_argument("--classifier", default="app/weights/emoji_classifier")
    parser.add_argument("--root", default="data/emoji", help="python -m imagedata.prepare emoji")
    parser.add_argument("--classes", default="20",
                        help="K (the K classes with the most training images), all, or a comma list of names / ids")
    parser.add_argument("--per-class", type=int, default=50, help="samples per class (N)")
    parser.add_argument("--sampling", nargs="*", default=[], help="generate() overrides, e.g. cfg_scale=1.5 top_k=0")
    parser.add_argument("--token-cache", default=None,
                        help="the generators' token cache: exact copies of any cached (jittered) view count "
                             "(default: copies of the training images' tokens)")
    parser.add_argument("--near-dup-pool", default="training-styles", choices=["training-styles", "all-styles"],
                        help="real pool of the near-duplicate baseline: train + val (Noto, Twemoji) or also "
                             "test_style (OpenMoji)")
    parser.add_argument("--fid-draws", type=int, default=FID_DRAWS)
    parser.add_argument("--grid-per-class", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="grids and results.json")
    parser.add_argument("--work-dir", default=None, help="keep the sample shards here (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    tokenizers = {path: load_flowmo(path).to(device).eval() for path in args.tokenizers}
    teacher = next(iter(tokenizers.values()))
    size = teacher.config.image_size
    features = classifier_feature_space(args.classifier)
    classifier = FeatureClassifier.from_pretrained(args.classifier)
    data_cfg = {"name": "emoji", "root": args.root, "train_split": "train", "val_split": "val"}
    class_names = list(build_dataset(data_cfg, "train", size, train=False).class_names)
    generators = {path: load_generator(path).to(device).eval() for path in args.generators}
    for path, model in generators.items():
        check_generator(model, class_names, path)
        for tok_path, tokenizer in tokenizers.items():
            try:
                model.check_tokenizer(tokenizer.config)
            except ValueError as error:
                raise SystemExit(f"generator {path} does not fit tokenizer {tok_path}: {error}") from None
    out_dir, work = Path(args.out), Path(args.work_dir or tempfile.mkdtemp(prefix="emoji_quality_"))
    out_dir.mkdir(parents=True, exist_ok=True)

    real = load_real_sets(data_cfg, size, tokenizer=teacher, token_cache=args.token_cache)
    val_images, val_labels = load_split(data_cfg, "val", size)
    style_images, style_labels = load_split(data_cfg, "test_style", size)
    classes = choose_classes(args.classes, real.train_labels, class_names)
    keep = in_classes(real.train_labels, classes)
    train_images, train_labels = real.train_images[keep], real.train_labels[keep]
    keep = in_classes(val_labels, classes)
    val_images, val_labels = val_images[keep], val_labels[keep]
    keep = in_classes(style_labels, classes)
    style_images, style_labels = style_images[keep], style_labels[keep]
    if not len(val_labels):
        raise SystemExit("the val split has no image of the chosen classes: choose others (--classes)")
    val_counts = {c: int((val_labels == c).sum()) for c in classes}
    chosen_real = RealSets(train_images, train_labels, val_images, real.train_tokens)

    # FID reference: the statistics of every real training image of the chosen classes.
    stats_path = work / "reference_train_statistics.npz"
    save_reference_statistics(stats_path, *compute_feature_statistics(Uint8Images(train_images), features=features,
                                                                      verbose=False))
    reference = Reference(description=f"emoji train, {len(classes)} classes ({len(train_labels)} images)",
                          statistics_file=stats_path)

    # Near-duplicate pool (thumbnails) and its threshold.
    pool_images, pool_labels = torch.cat([train_images, val_images]), torch.cat([train_labels, val_labels])
    if args.near_dup_pool == "all-styles":
        pool_images, pool_labels = torch.cat([pool_images, style_images]), torch.cat([pool_labels, style_labels])
    pool = thumbnails(pool_images)
    pool_sizes = [int((pool_labels == c).sum()) for c in classes]

    def tokens_of(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([teacher.tokenize(images[i:i + 256].to(device).float() / 127.5 - 1).cpu()
                              for i in range(0, len(images), 256)])

    def copy_rate(images: torch.Tensor) -> float | None:
        if real.train_tokens is None:
            return None
        return float(exact_copies(tokens_of(images), real.train_tokens).float().mean())

    real_val = {"class_accuracy": class_accuracy(classifier, val_images, val_labels),
                "fid": compute_metrics(Uint8Images(val_images), reference, metrics=("fid",), features=features,
                                       verbose=False)[0]["fid"],
                "exact_copy_rate": copy_rate(val_images)}
    real_val["fid_matched"] = real_val["fid"]
    style_fid = fid_at_counts(style_images, style_labels, val_counts, reference, features, args.fid_draws, args.seed)
    real_style = {"class_accuracy": class_accuracy(classifier, style_images, style_labels),
                  "fid_matched": style_fid[0], "fid_matched_std": style_fid[1],
                  "exact_copy_rate": copy_rate(style_images)}

    threshold = duplicate_threshold(pool, pool_labels)
    print(f"\n{describe(device)}; {args.per_class} samples per class of {len(classes)} classes; features: "
          f"{features.label} ({classifier.config.extra.get('val_accuracy', float('nan')):.4f} held-out accuracy "
          f"over all classes)")
    for path, tokenizer in tokenizers.items():
        print(f"decoder {path}: {tokenizer.decode_settings()}")
    short = [class_names[c] for c in classes if val_counts[c] > args.per_class]
    if short:
        print(f"note: fewer samples a class ({args.per_class}) than val images for {', '.join(short)}: FID@val draws "
              "all their samples, so its class mix is not quite val's")
    print(DEFINITIONS.format(
        classes=", ".join(f"{class_names[c]} {int((train_labels == c).sum())}/{val_counts[c]}/"
                          f"{int((style_labels == c).sum())}" for c in classes),
        classifier=args.classifier, num_classes=len(class_names), dim=classifier.config.feature_dim,
        copies_of=f"every view in {args.token_cache}" if args.token_cache else
        f"the {len(real.train_tokens) if real.train_tokens is not None else 0} training images (every class) tokenized "
        f"by {args.tokenizers[0]}",
        pool=("train + val" if args.near_dup_pool == "training-styles" else "train + val + test_style")
        + " images of the chosen classes", threshold=threshold, pool_min=min(pool_sizes), pool_max=max(pool_sizes),
        val_count=len(val_labels), acc=TARGETS["class_accuracy_ratio"], train_count=len(train_labels),
        fid_draws=args.fid_draws, fid=TARGETS["fid_ratio"], copies=TARGETS["exact_copy_rate"], draws=REAL_DRAWS,
        near=TARGETS["near_duplicate_ratio"]), end="")
    print("\n| generator | decoder | sampling | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---:|" * len(COLUMNS))
    print(f"| real val (held-out emoji, {len(val_labels)} images) | - | - | " + " | ".join(table_row(real_val, None))
          + " |")
    print("| real test_style (OpenMoji; FID at val's counts) | - | - | " + " | ".join(table_row(real_style, None))
          + " |")

    # What any generator can reach through each decoder: the real held-out emoji tokenized and decoded.
    for tok_path, tokenizer in tokenizers.items():
        decoded = reconstruct_uint8(tokenizer, val_images, args.batch_size, args.seed, device)
        through = {"class_accuracy": class_accuracy(classifier, decoded, val_labels),
                   "fid": compute_metrics(Uint8Images(decoded), reference, metrics=("fid",), features=features,
                                          verbose=False)[0]["fid"]}
        through["fid_matched"] = through["fid"]
        real_val.setdefault("through_decoder", {})[tok_path] = through
        steps = tokenizer.decode_settings()["steps"]
        print(f"| real val through the tokenizer (encode + decode; the ceiling of samples) | {Path(tok_path).name} "
              f"({steps} step{'' if steps == 1 else 's'}) | - | " + " | ".join(table_row(through, None)) + " |")

    overrides = parse_sampling(args.sampling)
    results: dict[str, Any] = {
        "hardware": describe(device), "classes": [class_names[c] for c in classes], "per_class": args.per_class,
        "val_counts": {class_names[c]: k for c, k in val_counts.items()}, "near_dup_pool": args.near_dup_pool,
        "duplicate_threshold": threshold, "fid_draws": args.fid_draws, "targets": TARGETS, "real_val": real_val,
        "real_test_style": real_style, "runs": []}
    verdicts = []
    for gen_path, model in generators.items():
        tokens_seen = None
        for tok_path, tokenizer in tokenizers.items():
            warning = model.other_tokenizer_warning(tokenizer)
            if warning:
                print(f"{gen_path} with {tok_path}: {warning}")
            made = generate_samples(model, tokenizer, overrides, per_class=args.per_class,
                                    out_dir=work / f"{Path(gen_path).name}__{Path(tok_path).name}",
                                    reference=str(stats_path), features=features, batch_size=args.batch_size,
                                    seed=args.seed, classes=classes, metrics=("fid",))
            if tokens_seen is not None and made.tokens is not None and not torch.equal(tokens_seen, made.tokens):
                print(f"note: {gen_path} sampled other tokens for {tok_path} (nondeterministic sampling?)")
            tokens_seen = made.tokens
            values = {"class_accuracy": class_accuracy(classifier, made.images, made.labels),
                      "fid_all": made.report.metrics["fid"], "images_per_second": made.report.images_per_second}
            fid = fid_at_counts(made.images, made.labels, val_counts, reference, features, args.fid_draws, args.seed)
            values.update(fid_matched=fid[0], fid_matched_std=fid[1], fid_draws=fid[2])
            memo = memorization_report(made.images, made.labels, made.tokens, chosen_real, seed=args.seed)
            values.update({k: v for k, v in memo.items() if not k.startswith(("near_duplicate", "duplicate",
                                                                                "real_per_class"))})
            values.update(near_duplicates_size_matched(thumbnails(made.images), made.labels, pool, pool_labels,
                                                       seed=args.seed))
            checks = verdict(values, real_val)
            steps = tokenizer.decode_settings()["steps"]
            decoder = f"{Path(tok_path).name} ({steps} step{'' if steps == 1 else 's'})"
            shown = sampling_shown(model, made.settings)
            print(f"| {model.model_type} ({gen_path}) | {decoder} | {shown} | "
                  + " | ".join(table_row(values, real_val)) + " |")
            grid = class_grid(grid_rows(made.images, made.labels, train_images, train_labels, classes, class_names,
                                        args.grid_per_class, seed=args.seed),
                              out_dir / f"{Path(gen_path).name}__{Path(tok_path).name}.png",
                              f"{model.model_type} {gen_path}, decoder {tok_path}: {shown}")
            verdicts.append(f"{model.model_type} + {decoder}: "
                            + ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items()))
            results["runs"].append({"generator": gen_path, "tokenizer": tok_path, "model_type": model.model_type,
                                    "sampling": made.settings, "decoder": tokenizer.decode_settings(),
                                    "values": values, "checks": checks, "grid": grid.name})
    print()
    for line in verdicts:
        print(line)
    atomic_write(out_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2, default=str)))
    print(f"\ngrids and results.json in {out_dir}")
    return results


if __name__ == "__main__":
    main()
