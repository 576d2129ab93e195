"""Training throughput and peak memory of FlowMo Stage 1A and Stage 1B steps.

    python benchmarks/train_speed.py --preset digits --device cpu --batch 8 --steps 5
    python benchmarks/train_speed.py --preset flowmo_lo --device cuda --dtype bf16 --batch 16 --k 8

Prints one table row per stage: steps/s, images/s and peak memory (CUDA: max_memory_allocated;
CPU: growth of the process's peak RSS, which only ever rises, so the first row is the honest one).
Perceptual terms are pixel MSE so no backbone weights are needed; the timing covers encoder,
decoder, sampler (1B) and the optimizer step.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tokenizer import FlowMo, FlowMoConfig  # noqa: E402
from tokenizer.losses import LossWeights, freeze, stage1a_losses, stage1b_losses  # noqa: E402

from hardware import describe  # benchmarks/hardware.py, beside this script
from timing import reset_peak, sync

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_config(name: str) -> FlowMoConfig:
    if name in ("flowmo_lo", "flowmo_hi", "tiny"):
        return FlowMoConfig.preset(name)
    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "tokenizer" / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"unknown preset {name!r}: use flowmo_lo, flowmo_hi, tiny or a configs/tokenizer/*.yaml name")
    return FlowMoConfig(**yaml.safe_load(path.read_text()))


def peak_memory_mb(device: torch.device, rss_before_kb: int) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kb) / 1024


def bench(stage: str, config: FlowMoConfig, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = FlowMo(config).to(device)
    if args.grad_checkpointing:
        model.set_gradient_checkpointing(True)
    if stage == "1b":
        freeze(model.encoder)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    images = torch.rand(args.batch, 3, config.image_size, config.image_size, device=device) * 2 - 1
    mse = lambda x, y: (x - y).pow(2).mean()  # noqa: E731
    weights = LossWeights()
    dtype = DTYPES[args.dtype]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def step() -> None:
        with autocast:
            if stage == "1a":
                loss, _ = stage1a_losses(model, images, weights, mse)
            else:
                loss, _ = stage1b_losses(model, images, weights, mse, mse, sample_steps=args.k,
                                         checkpoint=not args.no_sampler_checkpointing)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocator, kernels)
    reset_peak(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    elapsed = time.perf_counter() - start
    return {"stage": stage, "steps_per_s": args.steps / elapsed, "images_per_s": args.steps * args.batch / elapsed,
            "peak_mb": peak_memory_mb(device, rss_before)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits", help="flowmo_lo | flowmo_hi | tiny | digits")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--k", type=int, default=8, help="Stage 1B sampler steps")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per stage")
    parser.add_argument("--stages", default="1a,1b")
    parser.add_argument("--grad-checkpointing", action="store_true", help="per transformer block")
    parser.add_argument("--no-sampler-checkpointing", action="store_true", help="1B: keep every decoder call's activations")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = load_config(args.preset)
    print(f"# {describe(device)}")
    print(f"# preset={args.preset} dtype={args.dtype} batch={args.batch} K={args.k} steps={args.steps} "
          f"grad_checkpointing={args.grad_checkpointing} sampler_checkpointing={not args.no_sampler_checkpointing}")
    print(f"| {'stage':5} | {'steps/s':>8} | {'images/s':>9} | {'peak MB':>9} |")
    print(f"|{'-' * 7}|{'-' * 10}|{'-' * 11}|{'-' * 11}|")
    for stage in args.stages.split(","):
        row = bench(stage.strip(), config, args, device)
        print(f"| {row['stage']:5} | {row['steps_per_s']:8.3f} | {row['images_per_s']:9.2f} | {row['peak_mb']:9.1f} |")


if __name__ == "__main__":
    main()
