"""Encode / decode throughput, decoder evaluations per image and peak memory of FlowMo tokenizers.

    python benchmarks/tokenizer_speed.py --preset tiny --device cpu --batch-size 8
    python benchmarks/tokenizer_speed.py --preset flowmo_lo --device cuda --dtype bf16 --batch-size 32 \
        --modes 25:1.5 2:1
    python benchmarks/tokenizer_speed.py --checkpoint app/weights/tokenizer \
        --checkpoint app/weights/tokenizer_2step --modes 25:1.5 default --batch-size 32

Each ``--modes`` entry is a decoder sampler, ``STEPS:CFG`` (the release decodes with 25:1.5,
guidance inside its sigma interval) or ``default`` (what the tokenizer's config.json saves, e.g.
the few-step mode of a distilled tokenizer). Every model x mode is timed side by side in one
run on the same batch; the last column is the speed-up over the first decode row. Presets use
random weights (speed does not depend on them); checkpoints are loaded as saved.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from runkit.acceleration import compile_blocks
from tokenizer import FlowMo, FlowMoConfig, load_flowmo

from hardware import describe  # benchmarks/hardware.py, beside this script
from timing import peak_memory_kind, peak_memory_mib, reset_peak, timed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, dtype: str) -> Any:
    """Autocast to ``dtype`` on ``device`` (fp32: none)."""
    return torch.autocast(device.type, dtype=DTYPES[dtype]) if dtype != "fp32" else nullcontext()


def encode_row(model: FlowMo, images: torch.Tensor, repeats: int, dtype: str = "fp32") -> tuple[float, float]:
    """(median seconds per batch, peak memory MiB) of tokenizing ``images``."""
    device = images.device
    with torch.inference_mode(), autocast(device, dtype):
        reset_peak(device)
        return timed(lambda: model.tokenize(images), device, repeats), peak_memory_mib(device)


def measure(model: FlowMo, images: torch.Tensor, steps: int, cfg: float, repeats: int,
            dtype: str = "fp32") -> dict[str, tuple[float, float]]:
    """{"encode" | "decode": (median seconds per batch, peak memory MiB)} under autocast ``dtype``."""
    decode = decode_rows(model, images, [(steps, cfg)], repeats, dtype)[0]
    return {"encode": encode_row(model, images, repeats, dtype), "decode": (decode["seconds"], decode["memory"])}


def parse_mode(text: str) -> tuple[int | None, float | None]:
    """'25:1.5' -> (25, 1.5); 'default' -> (None, None): the tokenizer's saved sampler."""
    if text == "default":
        return None, None
    try:
        steps, cfg = text.split(":")
        return int(steps), float(cfg)
    except ValueError:
        raise argparse.ArgumentTypeError(f"mode {text!r} is neither STEPS:CFG (e.g. 25:1.5) nor 'default'") from None


def decode_rows(model: FlowMo, images: torch.Tensor, modes: list[tuple[int | None, float | None]], repeats: int,
                dtype: str = "fp32") -> list[dict]:
    """One row per mode: {"steps", "cfg", "evaluations" (decoder calls per image), "seconds" per batch, "memory"}."""
    device = images.device
    rows = []
    with torch.inference_mode(), autocast(device, dtype):
        indices = model.tokenize(images)
        for steps, cfg in modes:
            settings = model.decode_settings(steps, cfg)
            reset_peak(device)
            seconds = timed(lambda: model.decode(indices, steps=steps, cfg=cfg), device, repeats)
            rows.append({"steps": settings["steps"], "cfg": settings["cfg"],
                         "evaluations": model.decode_evaluations(steps, cfg), "seconds": seconds,
                         "memory": peak_memory_mib(device)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "flowmo_lo", "flowmo_hi"])
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="a saved tokenizer (repeatable); replaces --preset")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="autocast dtype (fp32: none)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--modes", nargs="+", type=parse_mode, default=[(25, 1.5)],
                        help="decoder samplers STEPS:CFG or 'default' (default: 25:1.5, the release's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks (runkit.acceleration.compile_blocks)")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    models = {path: load_flowmo(path) for path in args.checkpoint} \
        or {args.preset: FlowMo(FlowMoConfig.preset(args.preset))}
    print(f"on {device} [{describe(device)}]; dtype {args.dtype}, batch {args.batch_size}, compile {args.compile}, "
          f"median of {args.repeats}")
    header = (f"| {'model':<34} | {'path':<20} | {'evals/image':>11} | {'images/s':>10} | {'s/image':>9} "
              f"| {'peak MiB (' + peak_memory_kind(device) + ')':>24} | {'speed-up':>8} |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    first = None
    for name, model in models.items():
        model = model.to(device).eval()
        if args.compile:
            compile_blocks(model)
        config = model.config
        images = torch.rand(args.batch_size, 3, config.image_size, config.image_size, device=device) * 2 - 1
        encode_seconds, encode_memory = encode_row(model, images, args.repeats, args.dtype)
        label = f"{Path(name).name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M)"
        print(f"| {label:<34} | {'encode':<20} | {'-':>11} | {args.batch_size / encode_seconds:>10.2f} "
              f"| {encode_seconds / args.batch_size:>9.4f} | {encode_memory:>24,.0f} | {'':>8} |")
        for row in decode_rows(model, images, args.modes, args.repeats, args.dtype):
            first = first or row["seconds"]
            path = f"decode {row['steps']} st cfg {row['cfg']:g}"
            print(f"| {label:<34} | {path:<20} | {row['evaluations']:>11} | {args.batch_size / row['seconds']:>10.2f} "
                  f"| {row['seconds'] / args.batch_size:>9.4f} | {row['memory']:>24,.0f} "
                  f"| {first / row['seconds']:>7.1f}x |")


if __name__ == "__main__":
    main()
