"""Accuracy and speed of free-text prompt -> ImageNet class matching.

    python benchmarks/prompt_match.py [--prompts benchmarks/data/imagenet_prompts.tsv] [--show-misses]

Each prompt in the TSV paraphrases one class (plurals, extra words, one typo each). Top-k
counts a prompt as found when its class is among the k best matches (threshold 0, so every
prompt gets a ranking); "no match" counts prompts the default threshold would reject.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.prompts import ClassVocabulary, NoMatchError  # noqa: E402


def read_prompts(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            prompt, class_id = line.split("\t")
            rows.append((prompt, int(class_id)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=Path, default=ROOT / "benchmarks/data/imagenet_prompts.tsv")
    parser.add_argument("--show-misses", action="store_true", help="list prompts whose class is not ranked first")
    args = parser.parse_args()

    start = time.perf_counter()
    vocab = ClassVocabulary.builtin("imagenet")
    load_s = time.perf_counter() - start
    rows = read_prompts(args.prompts)
    vocab.match(rows[0][0], threshold=0.0)  # warm-up

    top1 = top5 = rejected = 0
    seconds = []
    misses = []
    for prompt, class_id in rows:
        start = time.perf_counter()
        ranked = [m.class_id for m in vocab.match(prompt, top_k=5, threshold=0.0)]
        seconds.append(time.perf_counter() - start)
        top1 += ranked[0] == class_id
        top5 += class_id in ranked
        try:
            vocab.match(prompt, top_k=1)
        except NoMatchError:
            rejected += 1
        if ranked[0] != class_id:
            misses.append((prompt, vocab.class_names[class_id], [vocab.class_names[i] for i in ranked[:3]]))

    n = len(rows)
    print(f"hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    print(f"vocabulary: {vocab}, threshold {vocab.threshold}, loaded in {load_s * 1000:.0f} ms")
    print(f"{'prompts':>8} | {'top-1':>6} | {'top-5':>6} | {'no match':>8} | {'ms/match (mean)':>15} | "
          f"{'ms/match (max)':>14}")
    print(f"{n:>8} | {top1 / n:>6.1%} | {top5 / n:>6.1%} | {rejected:>8} | {1000 * sum(seconds) / n:>15.2f} | "
          f"{1000 * max(seconds):>14.2f}")
    if args.show_misses:
        for prompt, want, got in misses:
            print(f"  miss: {prompt!r}: want {want!r}, got {got}")


if __name__ == "__main__":
    main()
