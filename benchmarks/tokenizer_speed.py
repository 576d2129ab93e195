"""Encode / decode throughput and peak memory of a FlowMo tokenizer.

    python benchmarks/tokenizer_speed.py --preset tiny --device cpu --batch-size 8 --steps 25
    python benchmarks/tokenizer_speed.py --preset flowmo_lo --device cuda --dtype bf16 --batch-size 32

Weights are random (speed does not depend on them). Decoding runs the full sampler (``--steps``
Euler steps, guidance batched inside its interval), which dominates the cost.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import torch

from tokenizer import FlowMo, FlowMoConfig

from hardware import describe  # benchmarks/hardware.py, beside this script
from timing import peak_memory_kind, peak_memory_mib, reset_peak, timed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def measure(model: FlowMo, images: torch.Tensor, steps: int, cfg: float, repeats: int,
            dtype: str = "fp32") -> dict[str, tuple[float, float]]:
    """{"encode" | "decode": (median seconds per batch, peak memory MiB)} under autocast ``dtype``."""
    device = images.device
    autocast = torch.autocast(device.type, dtype=DTYPES[dtype]) if dtype != "fp32" else nullcontext()
    results = {}
    with torch.inference_mode(), autocast:
        indices = model.tokenize(images)
        for name, fn in (("encode", lambda: model.tokenize(images)),
                         ("decode", lambda: model.decode(indices, steps=steps, cfg=cfg))):
            reset_peak(device)
            seconds = timed(fn, device, repeats)
            results[name] = (seconds, peak_memory_mib(device))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "flowmo_lo", "flowmo_hi"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="autocast dtype (fp32: none)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25, help="decoder sampling steps")
    parser.add_argument("--cfg", type=float, default=1.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile encoder and decoder")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = FlowMoConfig.preset(args.preset)
    torch.manual_seed(0)
    model = FlowMo(config).to(device).eval()
    if args.compile:
        model.compile()
    images = torch.rand(args.batch_size, 3, config.image_size, config.image_size, device=device) * 2 - 1
    results = measure(model, images, args.steps, args.cfg, args.repeats, args.dtype)

    params = sum(p.numel() for p in model.parameters())
    print(f"FlowMo {args.preset} ({params / 1e6:,.1f} M params, {config.image_size}px, "
          f"{config.bits_per_pixel:.4f} BPP) on {device} [{describe(device)}]")
    print(f"dtype {args.dtype}, batch {args.batch_size}, decoder steps {args.steps}, cfg {args.cfg}, "
          f"compile {args.compile}, median of {args.repeats}")
    header = f"| {'path':<8} | {'images/s':>10} | {'s/image':>9} | {'peak MiB (' + peak_memory_kind(device) + ')':>24} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, (seconds, memory) in results.items():
        print(f"| {name:<8} | {args.batch_size / seconds:>10.2f} | {seconds / args.batch_size:>9.4f} | {memory:>24,.0f} |")


if __name__ == "__main__":
    main()
