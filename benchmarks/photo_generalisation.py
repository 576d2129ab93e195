"""The generalisation gap of photo tokenizers: PSNR on their training photos, on held-out files of the
same packages and on a package never trained on, against training steps and the number of photos.

    python benchmarks/photo_generalisation.py runs/pc_10 runs/pc_40 runs/pc_all
    python benchmarks/photo_generalisation.py runs/pc_all --extra old=app/weights/photo_tokenizer

Each argument is a ``tokenizer.train`` run on ``data=photo_corpus``; every checkpoint it kept
(``checkpoint.keep_every``) is scored on three sets of fixed multi-scale crops
(:class:`imagedata.PhotoCropsDataset` in eval mode, ``--eval-crops`` per photo, at most
``--num-images`` evenly spaced):

- **train photos**: the run's own training photos (its ``data.train_max_photos`` subset);
- **held-out files**: the corpus's ``val`` split (other files of the training packages);
- **unseen source**: ``test_unseen`` (a whole package no run trains on).

The runs' checkpoints decode with ``--decode-steps`` (default: the settings saved with the weights) and
the ``--extra`` models with their saved settings, from per-image fixed noise; images are scored as uint8,
like the codecs. The best classic codec within the same bits on each set (the
thumbnail family, oracle-chosen per set, and JPEG's entropy-coded scan bytes on the crops where they
fit) is measured the same way. ``--extra name=dir`` adds finished models (e.g. the previous shipped
tokenizer) as rows. Writes results.json and photo_generalisation.png to --out-dir.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from hardware import describe  # noqa: E402  (benchmarks/hardware.py, beside this script)
from rate_distortion import decode_all, encode_all, score  # noqa: E402

from imagedata.photo_crops import PhotoCropsDataset  # noqa: E402
from imagedata.subsets import evenly_spaced  # noqa: E402
from runkit.checkpoint import CHECKPOINTS_DIR, STEP_PREFIX, parse_step  # noqa: E402
from runkit.fileio import atomic_write  # noqa: E402
from runkit.images import tensor_to_uint8, uint8_to_tensor  # noqa: E402
from tokenizer import FlowMo, load_flowmo  # noqa: E402
from tokenizer import classic_codecs as codecs  # noqa: E402
from tokenizer.eval import image_noise  # noqa: E402

SETS = {"train photos": "train", "held-out files": "val", "unseen source": "test_unseen"}
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "photo_generalisation"


def crops(root: Path, split: str, image_size: int, eval_crops: int, count: int,
          max_photos: int | None = None) -> tuple[torch.Tensor, int]:
    """(fixed crops (N,3,S,S) in [-1,1], number of photos) of one corpus split, N <= count evenly spaced."""
    dataset = PhotoCropsDataset(root / split, image_size, train=False, eval_crops=eval_crops, max_photos=max_photos)
    picks = evenly_spaced(len(dataset), min(count, len(dataset)))
    return torch.stack([dataset[i][0] for i in picks]), dataset.photos


def kept_steps(run: Path) -> list[Path]:
    """The run's complete checkpoint directories, by step."""
    steps = [d for d in (run / CHECKPOINTS_DIR).glob(f"{STEP_PREFIX}*") if (d / "config.json").is_file()]
    if not steps:
        raise SystemExit(f"{run} has no complete checkpoints under {CHECKPOINTS_DIR}/")
    return sorted(steps, key=parse_step)


def measure(model: FlowMo, images: torch.Tensor, batch_size: int, decode: dict[str, Any]) -> dict[str, float]:
    """PSNR / SSIM of ``images`` decoded with ``decode`` (empty: the settings saved with the model),
    uint8-rounded, from fixed noise per image."""
    originals = uint8_to_tensor(tensor_to_uint8(images))
    codes = encode_all(model, originals, batch_size)
    noise = torch.stack([image_noise(i, 0, tuple(images.shape[1:])) for i in range(len(images))])
    recons, _, _ = decode_all(model, codes, noise, batch_size, decode)
    return score(originals, recons, None, batch_size)


def codec_rows(images: torch.Tensor, bits: int, batch_size: int) -> dict[str, dict[str, Any]]:
    """The best thumbnail within ``bits`` (every crop within budget) and JPEG scan bytes on the crops it fits."""
    originals_u8 = tensor_to_uint8(images).numpy()
    originals = uint8_to_tensor(originals_u8)
    recon, choice = codecs.best_thumbnail(originals_u8, bits, grey=False)
    rows = {"thumbnail": {"setting": f"{choice.size}x{choice.size} @ {choice.bits} bit",
                          **score(originals, uint8_to_tensor(recon), None, batch_size)}}
    jpeg = codecs.jpeg_at_budget(originals_u8, bits, grey=False)
    fits = torch.from_numpy(np.flatnonzero(jpeg.fits))
    rows["JPEG scan bytes"] = {"setting": f"fits {len(fits)}/{len(images)}", "fits": jpeg.fits.tolist(),
                               **score(originals[fits], uint8_to_tensor(jpeg.recon)[fits], None, batch_size)}
    return rows


def common_step(runs: list[dict[str, Any]]) -> int:
    """The largest step every run has a row for."""
    shared = set.intersection(*({row["step"] for row in run["steps"]} for run in runs))
    if not shared:
        raise SystemExit("the runs share no checkpoint step: keep checkpoints at common steps (checkpoint.keep_every)")
    return max(shared)


def plot(results: dict[str, Any], path: Path) -> None:
    """Left: PSNR against steps (one colour per run, one line style per set). Right: PSNR against the number
    of training photos at the last step every run kept, so that runs of different lengths compare at equal
    compute; the codecs as horizontal lines."""
    figure, (by_step, by_photos) = plt.subplots(1, 2, figsize=(14, 5.2))
    styles = dict(zip(SETS, ("-", "--", ":")))
    colours = plt.cm.viridis(np.linspace(0, 0.85, max(1, len(results["runs"]))))
    for run, colour in zip(results["runs"], colours):
        for name in SETS:
            points = [(row["step"], row[name]["psnr"]) for row in run["steps"]]
            by_step.plot(*zip(*points), styles[name], color=colour, marker="o", markersize=3,
                         label=f"{run['photos']} photos: {name}")
    common = common_step(results["runs"])
    for name in SETS:
        points = sorted((run["photos"], next(row for row in run["steps"] if row["step"] == common)[name]["psnr"])
                        for run in results["runs"])
        by_photos.plot(*zip(*points), styles[name], color="black", marker="o", label=f"FlowMo, {name}")
    codec_colours = {"thumbnail": "tab:orange", "JPEG scan bytes": "tab:red"}
    for codec, colour in codec_colours.items():
        for name in ("held-out files", "unseen source"):
            value = results["codecs"][name][codec]["psnr"]
            for axis in (by_step, by_photos):
                axis.axhline(value, color=colour, linestyle=styles[name], linewidth=1,
                             label=f"{codec}, {name}" if axis is by_photos else None)
    by_step.set_xlabel("Stage-1A training step")
    by_photos.set_xlabel("training photographs")
    by_photos.set_xscale("log")
    for axis in (by_step, by_photos):
        axis.set_ylabel(f"PSNR (dB) at {results['bits']} bits per image")
        axis.grid(True, alpha=0.3)
    by_step.legend(fontsize=7, ncol=2)
    by_photos.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    by_step.set_title("generalisation gap over training (lines: runs' sets; flat: codecs)", fontsize=9)
    by_photos.set_title(f"at step {common}, the last step every run kept (train photos: each run's own)", fontsize=9)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| model | step | " + " | ".join(f"{name} PSNR / SSIM" for name in SETS) + " |",
             "|---|---:|" + "---:|" * len(SETS)]
    for run in results["runs"]:
        for row in run["steps"]:
            lines.append(f"| {run['name']} ({run['photos']} photos) | {row['step']} | "
                         + " | ".join(f"{row[name]['psnr']:.2f} / {row[name]['ssim']:.3f}" for name in SETS) + " |")
    for name, row in results["extra"].items():
        lines.append(f"| {name} | - | " + " | ".join(f"{row[s]['psnr']:.2f} / {row[s]['ssim']:.3f}" for s in SETS) + " |")
    for codec in ("thumbnail", "JPEG scan bytes"):
        cells = [f"{results['codecs'][s][codec]['psnr']:.2f} / {results['codecs'][s][codec]['ssim']:.3f} "
                 f"({results['codecs'][s][codec]['setting']})" for s in SETS]
        lines.append(f"| {codec} at {results['bits']} bits (train photos: all of them) | - | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="tokenizer.train run directories on data=photo_corpus")
    parser.add_argument("--extra", nargs="*", default=[], help="name=dir of finished models to add as rows")
    parser.add_argument("--root", type=Path, default=Path("data/photo_corpus"))
    parser.add_argument("--eval-crops", type=int, default=4)
    parser.add_argument("--num-images", type=int, default=400, help="crops per set, evenly spaced")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-steps", type=int, default=None,
                        help="decoder steps of the runs' checkpoints (default: saved with the weights); Stage-1A "
                             "models peak at 1-2 steps, Stage-1B ones at the grid they were tuned through")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if not args.runs and not args.extra:
        parser.error("name at least one run or --extra model")
    extras = dict(item.split("=", 1) for item in args.extra)
    first = load_flowmo(kept_steps(args.runs[0])[-1] if args.runs else next(iter(extras.values())))
    size, bits = first.config.image_size, first.config.bits_per_image
    fixed = {name: crops(args.root, split, size, args.eval_crops, args.num_images)[0]
             for name, split in SETS.items() if split != "train"}
    print(f"photo generalisation on {describe(torch.device('cpu'))}: {bits} bits per {size}-px image, "
          f"{args.eval_crops} fixed crops per photo, at most {args.num_images} crops per set")
    results: dict[str, Any] = {"bits": bits, "image_size": size, "eval_crops": args.eval_crops,
                               "num_images": args.num_images, "root": str(args.root), "runs": [], "extra": {}}
    all_train, _ = crops(args.root, "train", size, args.eval_crops, args.num_images)
    results["codecs"] = {name: codec_rows(images, bits, args.batch_size)
                         for name, images in {"train photos": all_train, **fixed}.items()}
    run_decode = {} if args.decode_steps is None else {"steps": args.decode_steps, "cfg": 1.0}
    results["decode_steps"] = args.decode_steps
    for run in args.runs:
        config = OmegaConf.load(run / "config.yaml")
        if config.data.name != "photo_crops":
            raise SystemExit(f"{run} did not train on data=photo_corpus (data.name={config.data.name})")
        train_images, photos = crops(args.root, str(config.data.train_split), size, args.eval_crops,
                                     args.num_images, config.data.get("train_max_photos"))
        sets = {"train photos": train_images, **fixed}
        record = {"name": run.name, "photos": photos, "steps": []}
        for step_dir in kept_steps(run):
            model = load_flowmo(step_dir).eval()
            row = {"step": parse_step(step_dir), **{name: measure(model, images, args.batch_size, run_decode)
                                                   for name, images in sets.items()}}
            record["steps"].append(row)
            print(f"{run.name} ({photos} photos) step {row['step']}: "
                  + ", ".join(f"{name} {row[name]['psnr']:.2f} dB" for name in SETS), flush=True)
        results["runs"].append(record)
    for name, path in extras.items():
        model = load_flowmo(path).eval()
        sets = {"train photos": all_train, **fixed}
        results["extra"][name] = {"path": path, **{s: measure(model, images, args.batch_size, {})
                                                   for s, images in sets.items()}}
    print("\n".join(["", *table(results)]))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if results["runs"]:
        plot(results, args.out_dir / "photo_generalisation.png")
    atomic_write(args.out_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))
    return results


if __name__ == "__main__":
    main()
