"""gFID sampling throughput: images/s of generation + decoding through the harness (no metrics).

    python benchmarks/gfid_throughput.py --generator runs/maskgit --tokenizer runs/flowmo_lo
    python benchmarks/gfid_throughput.py --samples 64 --batch 8 16 32    # random tiny models, any machine

Runs ``generator.gfid.generate_shards`` with ``make_sample_fn`` (exactly what ``eval_gfid`` runs,
shard writing and PNG encoding included) in a temporary directory, once per batch size, and
prints a markdown table with the hardware line. Without checkpoints it uses randomly initialised
models: the tiny FlowMo preset and a small MaskGIT (the numbers then only measure the pipeline).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from generator.gfid import SamplePlan, ShardStore, generate_shards, make_sample_fn

from hardware import describe  # benchmarks/hardware.py, beside this script


def load_models(args: argparse.Namespace, device: str) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    from generator import GeneratorConfig, MaskGIT, load_generator
    from tokenizer import FlowMo, FlowMoConfig, load_flowmo

    if (args.generator is None) != (args.tokenizer is None):
        raise SystemExit("give both --generator and --tokenizer, or neither (random tiny models)")
    if args.generator is not None:
        tokenizer = load_flowmo(args.tokenizer, config=args.tokenizer_preset)
        model = load_generator(args.generator)
        description = f"{args.generator} + {args.tokenizer}"
    else:
        torch.manual_seed(0)
        tokenizer = FlowMo(FlowMoConfig.preset("tiny"))
        model = MaskGIT(GeneratorConfig(model="maskgit", seq_len=tokenizer.config.num_indices,
                                        vocab_size=tokenizer.config.vocab_size, num_classes=10, width=128,
                                        depth=2, num_heads=4))
        description = "random tiny FlowMo + MaskGIT 2x128"
    return model.to(device).eval(), tokenizer.to(device).eval(), description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", help="generator save_pretrained dir or training run dir")
    parser.add_argument("--tokenizer", help="FlowMo dir, run dir or released .pth")
    parser.add_argument("--tokenizer-preset", default=None, help="flowmo_lo | flowmo_hi for a released .pth")
    parser.add_argument("--samples", type=int, default=64, help="images per measured run")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=8, help="generator steps (MaskGIT)")
    parser.add_argument("--cfg-scale", type=float, default=1.0)
    parser.add_argument("--decode-steps", type=int, default=None, help="default: the tokenizer's saved setting")
    parser.add_argument("--decode-cfg", type=float, default=None, help="default: the tokenizer's saved setting")
    parser.add_argument("--no-png", action="store_true", help="skip the per-sample PNGs (shards only)")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, description = load_models(args, device)
    decoding = tokenizer.decode_settings(args.decode_steps, args.decode_cfg)
    sample_fn = make_sample_fn(model, tokenizer, {"num_steps": args.steps, "cfg_scale": args.cfg_scale}, decoding)
    size = tokenizer.config.image_size
    rows = []
    for batch in args.batch:
        plan = SamplePlan(num_samples=args.samples, num_classes=model.num_classes, shard_size=max(batch, 100),
                          batch_size=batch)
        sample_fn(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))  # warm-up
        with tempfile.TemporaryDirectory() as scratch:
            store = ShardStore(Path(scratch), plan, save_png=not args.no_png)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            generated = generate_shards(sample_fn, store, show_progress_bar=False)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        rows.append((batch, generated, seconds, generated / seconds))

    print("| batch | images | seconds | images/s | 50k images at this rate |")
    print("|------:|-------:|--------:|---------:|------------------------:|")
    for batch, generated, seconds, rate in rows:
        print(f"| {batch} | {generated} | {seconds:.2f} | {rate:.2f} | {50_000 / rate / 3600:.2f} h |")
    print(f"\nmodels: {description}; {size}x{size} px; generator steps {args.steps}, cfg {args.cfg_scale}; "
          f"decoder steps {decoding['steps']}, cfg {decoding['cfg']}; PNGs {'off' if args.no_png else 'on'}")
    print(f"hardware: {describe()}")


if __name__ == "__main__":
    main()
