"""Generation speed of MaskGIT (8/16/32 steps) and AR (with / without KV cache), randomly initialised.

    python benchmarks/generator_speed.py                       # B-size models, 512 indices of vocab 512 (FlowMo-Lo)
    python benchmarks/generator_speed.py --size tiny --batch 4  # quick check on a laptop CPU

Prints a markdown table: tokens/s and images/s per setting, with the hardware line.
"""

from __future__ import annotations

import argparse

import torch

from generator import ARTransformer, GeneratorConfig, MaskGIT

from hardware import describe  # benchmarks/hardware.py, beside this script
from timing import timed

SIZES = {  # width, depth, heads
    "tiny": (64, 2, 2),
    "digits": (128, 4, 4),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
}


def generation_seconds(model: torch.nn.Module, batch: int, cfg: float, repeats: int, **kwargs) -> float:
    """Median seconds of one ``model.generate`` call for ``batch`` class ids (seeded, after a warm-up)."""
    device = model.device
    class_ids = torch.arange(batch) % model.num_classes
    return timed(lambda: model.generate(class_ids, cfg_scale=cfg, generator=torch.Generator(device).manual_seed(0),
                                        **kwargs), device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="b")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cfg", type=float, default=2.0, help="guidance scale (!= 1 doubles the batch)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        default="bfloat16" if torch.cuda.is_available() else "float32")
    parser.add_argument("--backend", choices=["auto", "xformers", "sdpa"], default="auto")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    width, depth, heads = SIZES[args.size]
    common = dict(seq_len=args.seq_len, vocab_size=args.vocab, num_classes=1000, width=width, depth=depth,
                  num_heads=heads)
    dtype = getattr(torch, args.dtype)
    rows = []
    runs = [("maskgit", MaskGIT, dict(num_steps=s), f"{s} steps") for s in (8, 16, 32)]
    runs += [("ar", ARTransformer, dict(use_kv_cache=c), "KV cache" if c else "no cache") for c in (True, False)]
    models: dict[str, torch.nn.Module] = {}
    for kind, cls, kwargs, label in runs:
        if kind not in models:
            models[kind] = cls(GeneratorConfig(model=kind, **common)).to(device, dtype).eval()
            models[kind].set_attention_backend(args.backend)
        model = models[kind]
        seconds = generation_seconds(model, args.batch, args.cfg, args.repeats, **kwargs)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append((kind, f"{params:.1f} M", label, args.batch * args.seq_len / seconds, args.batch / seconds))
    print(f"\nhardware: {describe()}; dtype {args.dtype}; batch {args.batch}; cfg {args.cfg}; "
          f"{args.seq_len} indices of vocab {args.vocab}; size {args.size} ({width} x {depth})\n")
    print("| model | params | setting | tokens/s | images/s |")
    print("|---|---|---|---:|---:|")
    for kind, params, label, tps, ips in rows:
        print(f"| {kind} | {params} | {label} | {tps:,.0f} | {ips:.2f} |")


if __name__ == "__main__":
    main()
