"""GPU readiness in one command: run the CUDA-marked tests, then measure every hot path on this GPU.

    python benchmarks/gpu_report.py                                    # everything (long: see README "GPU")
    python benchmarks/gpu_report.py --sections tokenizer --presets flowmo_lo --batch-sizes 8 \\
        --dtypes bf16 --modes eager --steps 4 --repeats 1                # a short run
    python benchmarks/gpu_report.py --sections authors --authors-code ~/src/FlowMo

Prints the configuration and hardware line, the result of ``pytest -m cuda``, then one table:
FlowMo-Lo/Hi (random weights) encode, decoder forward ("velocity") and full decode images/s and
peak memory, fp32 vs bf16 autocast, eager vs torch.compile, with MFU from FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode`` against ``--peak-tflops``; Stage 1A / 1B training
steps/s at FlowMo-Lo size; MaskGIT / AR base and large sampling tokens/s (AR with its KV cache),
xformers vs SDPA; and, with ``--authors-code``, the authors' released reconstruct beside ours.

Without a CUDA device it prints one line saying nothing was measured and exits 0. The exit
status is 1 when the CUDA-marked tests fail (the table is still printed).
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from argparse import Namespace
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from generator import GeneratorConfig
from generator.attention import xformers_available
from generator.base import build_generator
from runkit.acceleration import compile_blocks
from tokenizer import FlowMo, FlowMoConfig

import train_speed  # benchmarks/*.py, beside this script
from generator_speed import generation_seconds
from hardware import describe
from timing import peak_memory_mib, reset_peak, timed
from tokenizer_speed import DTYPES, measure

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("tests", "tokenizer", "train", "generator", "authors")
# NVIDIA's H100 SXM figure for dense bf16 tensor-core math (1,979 is with 2:4 sparsity).
H100_BF16_DENSE_TFLOPS = 989.4
NUM_CLASSES = 1000  # ImageNet, the size the generators are built for


class Row(NamedTuple):
    section: str
    model: str
    setting: str
    batch: int
    throughput: float | None  # items/s; None when the row could not be measured
    unit: str
    peak_mib: float | None
    gflop_per_item: float | None
    mfu: float | None
    note: str = ""


def split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None = None) -> Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma list of {', '.join(SECTIONS)} (authors needs --authors-code)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (median; one warm-up first)")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
                        help="the card's peak for MFU; default: H100 SXM bf16 dense, used for every dtype")
    group = parser.add_argument_group("tokenizer")
    group.add_argument("--presets", default="flowmo_lo,flowmo_hi", help="FlowMoConfig presets")
    group.add_argument("--batch-sizes", default="1,8,32")
    group.add_argument("--dtypes", default="fp32,bf16", help="autocast dtypes: fp32 (none), bf16, fp16")
    group.add_argument("--modes", default="eager,compile")
    group.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    group.add_argument("--steps", type=int, default=25, help="decoder sampling steps")
    group.add_argument("--cfg", type=float, default=1.5, help="decoder guidance (inside the released interval)")
    group = parser.add_argument_group("training")
    group.add_argument("--train-preset", default="flowmo_lo")
    group.add_argument("--train-batch", type=int, default=8)
    group.add_argument("--train-steps", type=int, default=5, help="timed optimizer steps per stage")
    group.add_argument("--train-dtypes", default="bf16")
    group.add_argument("--k", type=int, default=8, help="Stage 1B sampler steps")
    group.add_argument("--grad-checkpointing", action="store_true", help="per transformer block")
    group = parser.add_argument_group("generators")
    group.add_argument("--generators", default="maskgit_b,maskgit_l,ar_b,ar_l", help="configs/generator/*.yaml names")
    group.add_argument("--generator-tokenizer", default="flowmo_lo", help="preset giving sequence length and vocab")
    group.add_argument("--gen-batch", type=int, default=16)
    group.add_argument("--gen-cfg", type=float, default=2.0)
    group.add_argument("--gen-dtype", default="bf16", choices=["fp32", "bf16", "fp16"], help="weights dtype")
    group.add_argument("--maskgit-steps", type=int, default=12)
    group.add_argument("--backends", default="sdpa,xformers")
    group = parser.add_argument_group("the authors' released code")
    group.add_argument("--authors-code", type=Path, help="local checkout of the authors' FlowMo repository")
    group.add_argument("--authors-preset", default="flowmo_lo", choices=["flowmo_lo", "flowmo_hi"])
    group.add_argument("--authors-batch", type=int, default=8)
    args = parser.parse_args(argv)
    unknown = sorted(set(split(args.sections)) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    return args


# ---------------------------------------------------------------------------- FLOPs and rows
def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call (matmuls and attention kernels, as FlopCounterMode registers them)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def rate_row(section: str, model: str, setting: str, batch: int, seconds: float, peak: float | None,
             flops_per_item: float | None, peak_tflops: float, unit: str = "images/s", items: int | None = None,
             note: str = "") -> Row:
    items = batch if items is None else items
    mfu = flops_per_item * items / seconds / (peak_tflops * 1e12) if flops_per_item else None
    return Row(section, model, setting, batch, items / seconds, unit, peak,
               flops_per_item / 1e9 if flops_per_item else None, mfu, note)


def failed_row(section: str, model: str, setting: str, batch: int, error: BaseException) -> Row:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
        return Row(section, model, setting, batch, None, "", None, None, None, "out of memory")
    first_line = (str(error).splitlines() or [""])[0]
    return Row(section, model, setting, batch, None, "", None, None, None, f"{type(error).__name__}: {first_line}")


def autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=DTYPES[dtype]) if dtype != "fp32" else nullcontext()


# ---------------------------------------------------------------------------- sections
def run_cuda_tests() -> tuple[bool, str]:
    """``pytest -m cuda`` in a fresh process -> (passed, pytest's summary line)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests")], cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0:
        print(done.stdout[-6000:], done.stderr[-2000:], sep="\n")
    return done.returncode == 0, lines[-1] if lines else f"pytest exited {done.returncode}"


def tokenizer_flops(config: FlowMoConfig, device: torch.device, steps: int, cfg: float) -> dict[str, float]:
    """FLOPs per image of encode, one decoder forward and a full decode (guided steps counted as they run)."""
    model = FlowMo(config).to(device).eval()
    image = torch.rand(1, 3, config.image_size, config.image_size, device=device) * 2 - 1
    with torch.inference_mode():
        code = model.quantize(model.encode(image)).code
        t = torch.full((1,), 0.5, device=device)
        return {"encode": count_flops(lambda: model.encode(image)),
                "velocity": count_flops(lambda: model.velocity(image, code, t)),
                "decode": count_flops(lambda: model.decode(code, steps=steps, cfg=cfg))}


def tokenizer_rows(args: Namespace, device: torch.device) -> Iterator[Row]:
    for preset in split(args.presets):
        config = FlowMoConfig.preset(preset)
        flops = tokenizer_flops(config, device, args.steps, args.cfg)
        for mode in split(args.modes):
            torch.manual_seed(0)
            model = FlowMo(config).to(device).eval()
            if mode == "compile":
                compile_blocks(model, dynamic=False, mode=args.compile_mode)
            for dtype in split(args.dtypes):
                for batch in (int(b) for b in split(args.batch_sizes)):
                    setting = f"{mode} {dtype}"
                    if mode == "compile":
                        # One specialised graph set per shape and dtype, compiled during the warm-up call;
                        # resetting keeps the cache under dynamo's recompile limit across the sweep.
                        torch._dynamo.reset()
                    try:
                        yield from _tokenizer_config_rows(model, preset, setting, batch, dtype, flops, args, device)
                    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
                        yield failed_row("tokenizer", preset, setting, batch, error)
            del model


def _tokenizer_config_rows(model: FlowMo, preset: str, setting: str, batch: int, dtype: str,
                           flops: dict[str, float], args: Namespace, device: torch.device) -> Iterator[Row]:
    size = model.config.image_size
    images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    results = measure(model, images, args.steps, args.cfg, args.repeats, dtype)
    with torch.inference_mode(), autocast(device, dtype):
        code = model.quantize(model.encode(images)).code
        t = torch.rand(batch, device=device)
        reset_peak(device)
        velocity_s = timed(lambda: model.velocity(images, code, t), device, args.repeats)
        velocity_peak = peak_memory_mib(device)
    timings = {"encode": results["encode"], "velocity": (velocity_s, velocity_peak), "decode": results["decode"]}
    for path, (seconds, peak) in timings.items():
        detail = f", {args.steps} steps cfg {args.cfg}" if path == "decode" else ""
        yield rate_row("tokenizer", preset, f"{path} {setting}{detail}", batch, seconds, peak, flops[path],
                       args.peak_tflops)


def train_rows(args: Namespace, device: torch.device) -> Iterator[Row]:
    config = train_speed.load_config(args.train_preset)
    for dtype in split(args.train_dtypes):
        for stage in ("1a", "1b"):
            setting = f"stage {stage}{f' K={args.k}' if stage == '1b' else ''} {dtype}" \
                      f"{' grad-ckpt' if args.grad_checkpointing else ''}"
            options = Namespace(batch=args.train_batch, k=args.k, steps=args.train_steps, dtype=dtype,
                                grad_checkpointing=args.grad_checkpointing, no_sampler_checkpointing=False)
            try:
                result = train_speed.bench(stage, config, options, device)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
                yield failed_row("train", args.train_preset, setting, args.train_batch, error)
                continue
            yield Row("train", args.train_preset, setting, args.train_batch, result["steps_per_s"], "steps/s",
                      result["peak_mb"], None, None, f"{result['images_per_s']:.2f} images/s")


def generator_config(name: str, tokenizer: FlowMoConfig) -> GeneratorConfig:
    data = yaml.safe_load((ROOT / "configs" / "generator" / f"{name}.yaml").read_text())
    return GeneratorConfig.from_dict({**data, "seq_len": tokenizer.num_indices, "vocab_size": tokenizer.vocab_size,
                                      "num_classes": NUM_CLASSES})


def generator_rows(args: Namespace, device: torch.device) -> Iterator[Row]:
    tokenizer = FlowMoConfig.preset(args.generator_tokenizer)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.gen_dtype]
    for name in split(args.generators):
        config = generator_config(name, tokenizer)
        torch.manual_seed(0)
        model = build_generator(config).to(device, dtype).eval()
        if config.model == "ar":
            kwargs, how = {"use_kv_cache": True}, "KV cache"
        else:
            kwargs, how = {"num_steps": args.maskgit_steps}, f"{args.maskgit_steps} steps"
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for backend in split(args.backends):
            setting = f"{backend} {args.gen_dtype}, {how}, cfg {args.gen_cfg}"
            if backend == "xformers" and (device.type != "cuda" or not xformers_available()):
                yield Row("generator", name, setting, args.gen_batch, None, "", None, None, None,
                          "skipped: xformers needs CUDA and pip install -e '.[cuda]'")
                continue
            model.set_attention_backend(backend)
            try:
                reset_peak(device)
                seconds = generation_seconds(model, args.gen_batch, args.gen_cfg, args.repeats, **kwargs)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
                yield failed_row("generator", name, setting, args.gen_batch, error)
                continue
            yield rate_row("generator", name, setting, args.gen_batch, seconds, peak_memory_mib(device), None,
                           args.peak_tflops, unit="tokens/s", items=args.gen_batch * config.seq_len,
                           note=f"{params:.1f} M params, {args.gen_batch / seconds:.2f} images/s")
        del model


def load_authors_model(path: Path, preset: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Build the authors' FlowMo (random weights) from their checkout at ``path``, imported at run time.

    Follows their README: ``flowmo/configs/base.yaml`` + ``train_utils.build_model``; the released
    presets differ only in ``context_dim``. Returns (model, their eval.sampling settings).
    """
    from omegaconf import OmegaConf

    base = path / "flowmo" / "configs" / "base.yaml"
    if not base.is_file():
        raise FileNotFoundError(f"no flowmo/configs/base.yaml under --authors-code {path} (expected a checkout of "
                                "the authors' FlowMo repository)")
    sys.path.insert(0, str(path))
    try:
        train_utils = importlib.import_module("flowmo.train_utils")
    finally:
        sys.path.remove(str(path))
    config = OmegaConf.load(base)
    config.model.context_dim = FlowMoConfig.preset(preset).context_dim
    config.model.codebook_size_for_entropy = 1  # their README's test-time setting (the entropy loss is unused)
    torch.manual_seed(0)
    model = train_utils.build_model(config).to(device).eval()
    sampling = OmegaConf.to_container(config.eval.sampling, resolve=True) if "eval" in config else {}
    return model, sampling


def authors_rows(args: Namespace, device: torch.device) -> Iterator[Row]:
    """Reconstruct (encode + decode) images/s: the authors' code under bf16 autocast, then ours, same GPU."""
    preset, batch = args.authors_preset, args.authors_batch
    config = FlowMoConfig.preset(preset)
    images = torch.rand(batch, 3, config.image_size, config.image_size, device=device) * 2 - 1
    try:
        theirs, sampling = load_authors_model(args.authors_code, preset, device)
    except Exception as error:  # any import or build failure of foreign code is reported, not fatal
        yield failed_row("authors", preset, "released code: could not load", batch, error)
        return
    settings = ", ".join(f"{k}={v}" for k, v in sampling.items()) or "their defaults"
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            reset_peak(device)
            their_s = timed(lambda model=theirs: model.reconstruct(images), device, args.repeats)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        yield failed_row("authors", preset, "released code reconstruct bf16", batch, error)
        return
    yield rate_row("authors", preset, "released code reconstruct bf16", batch, their_s, peak_memory_mib(device),
                   None, args.peak_tflops, note=f"their eval.sampling: {settings}"[:160])
    del theirs
    for mode in split(args.modes):
        setting = f"this code reconstruct {mode} bf16, {args.steps} steps cfg {args.cfg}"
        torch.manual_seed(0)
        ours = FlowMo(config).to(device).eval()
        if mode == "compile":
            torch._dynamo.reset()
            compile_blocks(ours, dynamic=False, mode=args.compile_mode)
        try:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                reset_peak(device)
                our_s = timed(lambda model=ours: model.reconstruct(images, steps=args.steps, cfg=args.cfg), device,
                              args.repeats)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            yield failed_row("authors", preset, setting, batch, error)
            continue
        finally:
            del ours
        yield rate_row("authors", preset, setting, batch, our_s, peak_memory_mib(device), None, args.peak_tflops,
                       note=f"{their_s / our_s:.2f}x the released code")


# ---------------------------------------------------------------------------- output
HEADER = ("section", "model", "setting", "batch", "throughput", "peak MiB", "GFLOP/item", "MFU", "notes")


def format_row(row: Row) -> str:
    throughput = f"{row.throughput:,.2f} {row.unit}" if row.throughput is not None else "not measured"
    cells = (row.section, row.model, row.setting, str(row.batch), throughput,
             f"{row.peak_mib:,.0f}" if row.peak_mib is not None else "",
             f"{row.gflop_per_item:,.1f}" if row.gflop_per_item is not None else "",
             f"{100 * row.mfu:.1f}%" if row.mfu is not None else "", row.note)
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(f"no CUDA device: nothing measured ({describe('cpu')})")
        return 0
    device = torch.device("cuda")
    sections = split(args.sections)
    print(f"hardware: {describe(device)}; xformers "
          f"{importlib.import_module('xformers').__version__ if xformers_available() else 'not installed'}")
    print(f"config: sections {sections}; tokenizer presets {args.presets}, batch {args.batch_sizes}, dtypes "
          f"{args.dtypes}, modes {args.modes} (compile mode {args.compile_mode}), decode {args.steps} steps cfg "
          f"{args.cfg}; training {args.train_preset} batch {args.train_batch} x {args.train_steps} steps, K={args.k}, "
          f"{args.train_dtypes}; generators {args.generators} batch {args.gen_batch} cfg {args.gen_cfg} "
          f"{args.gen_dtype}; median of {args.repeats} after a warm-up; fp32 matmul precision "
          f"{torch.get_float32_matmul_precision()}")
    print(f"MFU = counted FLOPs / time / {args.peak_tflops:g} TFLOPS"
          + (" (default: H100 SXM bf16 dense; pass --peak-tflops for another card)"
             if args.peak_tflops == H100_BF16_DENSE_TFLOPS else " (--peak-tflops)")
          + "; peak MiB = torch.cuda.max_memory_allocated over the row")
    tests_ok = True
    if "tests" in sections:
        tests_ok, summary = run_cuda_tests()
        print(f"CUDA-marked tests (pytest -m cuda): {'passed' if tests_ok else 'FAILED'}: {summary}")
    print()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "|".join("---" for _ in HEADER) + "|", flush=True)
    producers = {"tokenizer": tokenizer_rows, "train": train_rows, "generator": generator_rows}
    for section in sections:
        if section == "authors":
            if args.authors_code is None:
                print(format_row(Row("authors", args.authors_preset, "released code", args.authors_batch, None, "",
                                     None, None, None, "pass --authors-code PATH to measure it")))
                continue
            rows = authors_rows(args, device)
        elif section in producers:
            rows = producers[section](args, device)
        else:
            continue
        for row in rows:
            print(format_row(row), flush=True)
    return 0 if tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
