"""Plot the logged curves of several training runs side by side (from their TensorBoard logs).

    python benchmarks/training_curves.py runs/digits_base runs/digits_tmean1 --out curves.png
    python benchmarks/training_curves.py runs/a runs/b --tags val/psnr train/flow --labels base shifted

One panel per tag, one line per run (named by --labels or the run folder), and a table of each
tag's last value per run. Reads only the scalar summaries that tokenizer.train and
generator.train write under <run>/tb/.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def read_scalars(run_dir: Path, tag: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one scalar tag in ``run_dir/tb``; empty lists when the tag is absent."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = run_dir / "tb"
    if not tb.is_dir():
        raise SystemExit(f"{run_dir} has no tb/ folder of TensorBoard logs")
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return [], []
    points = events.Scalars(tag)
    return [p.step for p in points], [p.value for p in points]


def smooth(values: list[float], window: int) -> list[float]:
    """Bias-corrected exponential moving average with span ``window`` points (1: unchanged).

    Exponential, not a box window: a box window makes a false step in a falling loss curve at the
    point where the first, large values leave it.
    """
    decay = 1.0 - 2.0 / (window + 1)
    out, average = [], 0.0
    for i, value in enumerate(values):
        average = decay * average + (1.0 - decay) * value
        out.append(average / (1.0 - decay ** (i + 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="*", default=None)
    parser.add_argument("--tags", nargs="+", default=["val/psnr", "train/flow"])
    parser.add_argument("--smooth", type=int, default=20, help="moving-average span (points) for train/* tags")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", type=Path, default=Path("training_curves.png"))
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"{len(labels)} labels for {len(args.runs)} runs")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.tags), figsize=(5.5 * len(args.tags), 4), squeeze=False)
    rows = []
    for run, label in zip(args.runs, labels):
        row = [label]
        for ax, tag in zip(axes[0], args.tags):
            steps, values = read_scalars(run, tag)
            if tag.startswith("train/"):
                values = smooth(values, args.smooth)
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, label=label)
            row.append(f"{values[-1]:.4g} @ {steps[-1]}" if values else "-")
        rows.append(row)
    for ax, tag in zip(axes[0], args.tags):
        ax.set_title(tag + (f" (moving average {args.smooth})" if tag.startswith("train/") else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if tag.startswith("train/"):
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)

    header = ["run", *(f"last {tag}" for tag in args.tags)]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(str(cell).ljust(w) for cell, w in zip(row, widths)))
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
