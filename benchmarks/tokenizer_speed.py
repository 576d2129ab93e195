"""Encode / decode throughput and peak memory of a FlowMo tokenizer.

    python benchmarks/tokenizer_speed.py --preset tiny --device cpu --batch-size 8 --steps 25
    python benchmarks/tokenizer_speed.py --preset flowmo_lo --device cuda --dtype bf16 --batch-size 32

Weights are random (speed does not depend on them). Decoding runs the full sampler (``--steps``
Euler steps, guidance batched inside its interval), which dominates the cost.
"""

from __future__ import annotations

import argparse
import resource
import time
from contextlib import nullcontext

import torch

from tokenizer import FlowMo, FlowMoConfig

from hardware import describe  # benchmarks/hardware.py, beside this script

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} (allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} (process RSS)"


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


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
    autocast = (torch.autocast(device.type, dtype=DTYPES[args.dtype]) if args.dtype != "fp32" else nullcontext())
    images = torch.rand(args.batch_size, 3, config.image_size, config.image_size, device=device) * 2 - 1

    with torch.inference_mode(), autocast:
        indices = model.tokenize(images)
        reset_peak(device)
        encode_s = timed(lambda: model.tokenize(images), device, args.repeats)
        encode_mem = peak_memory_mib(device)
        reset_peak(device)
        decode_s = timed(lambda: model.decode(indices, steps=args.steps, cfg=args.cfg), device, args.repeats)
        decode_mem = peak_memory_mib(device)

    params = sum(p.numel() for p in model.parameters())
    print(f"FlowMo {args.preset} ({params / 1e6:,.1f} M params, {config.image_size}px, "
          f"{config.bits_per_pixel:.4f} BPP) on {device} [{describe(device)}]")
    print(f"dtype {args.dtype}, batch {args.batch_size}, decoder steps {args.steps}, cfg {args.cfg}, "
          f"compile {args.compile}, median of {args.repeats}")
    header = f"| {'path':<8} | {'images/s':>10} | {'s/image':>9} | {'peak memory MiB':>24} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, seconds, memory in (("encode", encode_s, encode_mem), ("decode", decode_s, decode_mem)):
        print(f"| {name:<8} | {args.batch_size / seconds:>10.2f} | {seconds / args.batch_size:>9.4f} | {memory:>24} |")


if __name__ == "__main__":
    main()
