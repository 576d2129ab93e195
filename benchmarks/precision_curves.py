"""bf16 autocast against fp32 on one training recipe: loss curves of both precisions at two seeds, so
the bf16-fp32 gap stands beside the seed-to-seed gap it must stay within.

    python benchmarks/precision_curves.py                          # the digits recipe, 1,000 steps
    python benchmarks/precision_curves.py --steps 2000 --out-dir runs/precision

Runs ``python -m tokenizer.train experiment=<recipe>`` four times (mixed_precision no / bf16 x seed
0 / 1, compile off so only the precision differs), then prints, per run, the mean training loss over
the last ``--window`` steps and the validation PSNR, and the two gaps: |bf16 - fp32| at the same
seed and |seed 0 - seed 1| at the same precision. Writes ``<out>.png`` (train/loss and val/psnr,
via benchmarks/training_curves.py) beside the table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from training_curves import read_scalars, smooth  # benchmarks/*.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"fp32": "no", "bf16": "bf16"}


def train(recipe: str, precision: str, seed: int, steps: int, run_dir: Path) -> None:
    command = [sys.executable, "-m", "tokenizer.train", f"experiment={recipe}", f"run_dir={run_dir}",
               f"seed={seed}", f"train.max_steps={steps}", f"train.mixed_precision={PRECISIONS[precision]}",
               "train.compile=false", "log.every=10", f"log.val_every={steps // 2}", f"log.images_every={steps}",
               f"checkpoint.every={steps}"]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def last_mean(run_dir: Path, tag: str, window: int) -> float:
    steps, values = read_scalars(run_dir, tag)
    kept = [v for s, v in zip(steps, values) if s > steps[-1] - window]
    return statistics.fmean(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="digits")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--window", type=int, default=200, help="steps the final mean loss averages")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/precision_curves"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "precision_curves.png")
    args = parser.parse_args()
    runs = {(p, seed): args.out_dir / f"{args.recipe}_{p}_seed{seed}" for p in PRECISIONS for seed in (0, 1)}
    for (precision, seed), run_dir in runs.items():
        if not (run_dir / "summary.json").is_file():
            print(f"training {run_dir.name} ...", file=sys.stderr, flush=True)
            train(args.recipe, precision, seed, args.steps, run_dir)
    loss = {key: last_mean(run, "train/loss", args.window) for key, run in runs.items()}
    psnr = {key: read_scalars(run, "val/psnr")[1][-1] for key, run in runs.items()}
    print(f"# {args.recipe} recipe, {args.steps} steps; loss = mean train/loss over the last {args.window} steps")
    print("| precision | seed | final loss | val PSNR (dB) |\n|---|---:|---:|---:|")
    for (precision, seed) in runs:
        print(f"| {precision} | {seed} | {loss[precision, seed]:.5f} | {psnr[precision, seed]:.2f} |")
    print("\n| gap | loss | val PSNR (dB) |\n|---|---:|---:|")
    for seed in (0, 1):
        print(f"| bf16 - fp32, seed {seed} | {loss['bf16', seed] - loss['fp32', seed]:+.5f} "
              f"| {psnr['bf16', seed] - psnr['fp32', seed]:+.2f} |")
    for precision in PRECISIONS:
        print(f"| seed 1 - seed 0, {precision} | {loss[precision, 1] - loss[precision, 0]:+.5f} "
              f"| {psnr[precision, 1] - psnr[precision, 0]:+.2f} |")
    plot(runs, args)
    print(f"\nwrote {args.out}")


def plot(runs: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (precision, seed), run_dir in runs.items():
        style = {"color": "tab:blue" if precision == "fp32" else "tab:orange", "linestyle": "-" if seed == 0 else "--"}
        steps, values = read_scalars(run_dir, "train/loss")
        axes[0].plot(steps, smooth(values, 20), label=f"{precision}, seed {seed}", **style)
        steps, values = read_scalars(run_dir, "val/psnr")
        axes[1].plot(steps, values, marker="o", label=f"{precision}, seed {seed}", **style)
    axes[0].set(title="train/loss (EMA span 20 logs)", xlabel="step", yscale="log")
    axes[1].set(title="val/psnr (dB)", xlabel="step")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"bf16 autocast vs fp32: the {args.recipe} recipe at two seeds")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
