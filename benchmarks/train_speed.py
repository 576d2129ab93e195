"""Training and decoding speed on this machine: the authors' release beside this code in eager fp32,
bf16 autocast, torch.compile and compile + bf16, and ``python -m tokenizer.train`` at its defaults
(``compile: auto``, ``mixed_precision: auto``).

    python benchmarks/train_speed.py --authors-code ~/src/FlowMo                      # every config
    python benchmarks/train_speed.py --configs small64 --rounds 3 --authors-code ~/src/FlowMo
    python benchmarks/train_speed.py --configs digits --sections train --rounds 1      # quick

Configs: ``tiny`` (the release's test size), ``digits`` and ``photos32`` (the shipped recipes;
photos32 trains on ``python -m imagedata.prepare_scikit_photos`` crops in a temporary folder) and
``small64`` (``configs/tokenizer/small64.yaml``: the FlowMo-Lo architecture at 64 px, 44 M
parameters, batch 16 as 2 micro-batches of 8). Perceptual terms are pixel MSE on both sides, so no
backbone weights are needed.

Rows, each in its own subprocess with an empty inductor cache (so a compile warm-up is a cold one):
- ``release``: the authors' training step (their ``rf_loss`` forward/backward over ``n_grad_acc``
  chunks, gradient-norm logging, MuAdam, the block-norm reset and their EMA every 10 steps), from a
  local checkout (``--authors-code``; their code hard-codes ``.cuda()``, made a no-op on a CPU). Their autocast names the CUDA device, so on a CPU it runs fp32, as they would.
- ``ours <mode>``: the same work through this code (``stage1a_losses``, Adam, ``restore_weight_norms``,
  the EMA every 10 steps) under each mode; compile is :func:`runkit.acceleration.compile_blocks`.
- ``CLI auto``: ``python -m tokenizer.train`` with the config's recipe, everything else at its
  defaults; the row is its ``summary.json`` (steady-state steps/s, warm-up seconds, and what auto
  chose). Recipes run with ``max_steps`` >= 500 so that ``compile: auto`` applies; the benchmark
  stops the run once ``--cli-steps`` steady steps are recorded (summary.json is rewritten at every
  checkpoint).
- decode: ``reconstruct`` (encode + the release's 25-step, cfg-1.5 sampler) images/s, the release
  and ours per mode.
- gen-train / gen-sample (``--generators``): a generator's training step (``training_loss`` +
  AdamW, batch 64 of random tokens) and ``generate`` (``--gen-sample-batch`` images over 10 classes
  at the config's saved sampling defaults; MaskGIT 8 steps, AR with its KV cache), per mode. ``digits_maskgit`` / ``digits_ar`` are the
  shipped 128-wide models (32 indices, vocab 64); ``small_maskgit`` is 384 wide, 6 deep, on
  small64-sized tokens (128 indices, vocab 512), to test the width rule on a generator.

Rounds interleave the rows (release, ours..., release, ours...), so a slow spell of a shared
machine hits every row alike; the table gives medians over rounds, the warm-up of the first (cold)
round, and the speed-up over the release (or over ours eager fp32 without ``--authors-code``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runkit.acceleration import autocast, compile_blocks  # noqa: E402
from runkit.ema import EMA  # noqa: E402
from tokenizer import FlowMo, FlowMoConfig  # noqa: E402
from tokenizer.losses import LossWeights, freeze, stage1a_losses, stage1b_losses  # noqa: E402
from tokenizer.train import block_linear_weights, restore_weight_norms, weight_norms  # noqa: E402

from hardware import describe  # benchmarks/hardware.py, beside this script
from timing import reset_peak, sync

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # --dtype -> runkit.acceleration.autocast's name
MODES = ("eager fp32", "eager bf16", "compile fp32", "compile bf16")
# Per config: batch, micro-batches per step, the CLI's recipe overrides.
SETUPS = {
    "tiny": (8, 1, ["tokenizer=tiny", "data=digits", "loss.perceptual=mse", "train.batch_size=8",
                    "train.grad_accum=1"]),
    "digits": (32, 1, ["experiment=digits"]),
    "photos32": (32, 1, ["experiment=photos"]),
    "small64": (16, 2, ["tokenizer=small64", "data=digits", "loss.perceptual=mse"]),
}
EMA_EVERY = 10  # both codebases' default EMA refresh
GENERATORS = {  # configs/generator/<yaml> or explicit sizes; seq_len, vocab
    "digits_maskgit": ("digits_maskgit", {}, 32, 64),
    "digits_ar": ("digits_ar", {}, 32, 64),
    "small_maskgit": ("digits_maskgit", {"width": 384, "depth": 6, "num_heads": 6}, 128, 512),
}


def load_config(name: str) -> FlowMoConfig:
    """A preset (flowmo_lo, flowmo_hi, tiny) or a configs/tokenizer/<name>.yaml."""
    if name in ("flowmo_lo", "flowmo_hi", "tiny"):
        return FlowMoConfig.preset(name)
    import yaml

    path = ROOT / "configs" / "tokenizer" / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"unknown preset {name!r}: use flowmo_lo, flowmo_hi, tiny or a configs/tokenizer/*.yaml name")
    return FlowMoConfig.from_dict(yaml.safe_load(path.read_text()))


def peak_memory_mb(device: torch.device, rss_before_kb: int) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kb) / 1024


# ---------------------------------------------------------------------------- our training step
def bench(stage: str, config: FlowMoConfig, args: Namespace, device: torch.device) -> dict:
    """Steps/s, images/s, peak memory and warm-up seconds of our Stage-1A or 1B step.

    ``args``: batch, k (1B sampler steps), steps (timed), dtype, grad_checkpointing,
    no_sampler_checkpointing, and optionally compile, grad_accum and warmup (untimed first steps).
    """
    torch.manual_seed(0)
    model = FlowMo(config).to(device)
    if args.grad_checkpointing:
        model.set_gradient_checkpointing(True)
    if stage == "1b":
        freeze(model.encoder)
    ema = EMA(model, 0.9999, EMA_EVERY)
    norm_weights = block_linear_weights(model)
    norms = weight_norms(norm_weights)
    if getattr(args, "compile", False):
        compile_blocks(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    accum = getattr(args, "grad_accum", 1)
    micro = args.batch // accum
    images = torch.rand(args.batch, 3, config.image_size, config.image_size, device=device) * 2 - 1
    mse = lambda x, y: (x - y).pow(2).mean()  # noqa: E731
    weights = LossWeights()
    precision = PRECISION[args.dtype]
    count = {"step": 0}

    def step() -> None:
        for chunk in images.split(micro):
            with autocast(device, precision):
                if stage == "1a":
                    loss, _ = stage1a_losses(model, chunk, weights, mse)
                else:
                    loss, _ = stage1b_losses(model, chunk, weights, mse, mse, sample_steps=args.k,
                                             checkpoint=not args.no_sampler_checkpointing)
            (loss / accum).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        restore_weight_norms(norm_weights, norms)
        count["step"] += 1
        ema.update(model, count["step"])

    return timed_steps(step, args, device)


def timed_steps(step: Any, args: Namespace, device: torch.device) -> dict:
    """Run ``getattr(args, "warmup", 1)`` untimed steps (compilation, allocator), then ``args.steps`` timed."""
    start = time.perf_counter()
    for _ in range(getattr(args, "warmup", 1)):
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    reset_peak(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    elapsed = time.perf_counter() - start
    return {"steps_per_s": args.steps / elapsed, "images_per_s": args.steps * args.batch / elapsed,
            "peak_mb": peak_memory_mb(device, rss_before), "warmup_s": warmup_s}


# ---------------------------------------------------------------------------- the release
def import_authors(path: Path) -> tuple[Any, Any, Any]:
    """(models, train_utils, their base config) from the authors' checkout at ``path``."""
    import importlib

    from omegaconf import OmegaConf

    base = path / "flowmo" / "configs" / "base.yaml"
    if not base.is_file():
        raise SystemExit(f"no flowmo/configs/base.yaml under --authors-code {path} (expected a checkout of the "
                         "authors' FlowMo repository; its imports need `pip install mup einops`)")
    sys.path.insert(0, str(path))
    try:
        models = importlib.import_module("flowmo.models")
        train_utils = importlib.import_module("flowmo.train_utils")
    finally:
        sys.path.remove(str(path))
    return models, train_utils, OmegaConf.load(base)


def authors_config(base: Any, config: FlowMoConfig, batch: int, accum: int) -> Any:
    """Their config for our architecture: widths, depths, code, patch and image size, batch."""
    cfg = base.copy()
    cfg.model.update(patch_size=config.patch_size, mup_width=config.dec_width, enc_mup_width=config.enc_width,
                     code_length=config.code_length, context_dim=config.context_dim,
                     codebook_size_for_entropy=config.lfq_bits, enc_depth=config.enc_depth,
                     dec_depth=config.dec_depth)
    cfg.data.update(image_size=config.image_size, batch_size=batch)
    cfg.opt.update(n_grad_acc=accum)
    return cfg


@contextmanager
def cuda_calls_stay_on_cpu(device: torch.device) -> Iterator[None]:
    """On a CPU, make ``Module.cuda()`` / ``Tensor.cuda()`` no-ops: the release hard-codes them."""
    if device.type == "cuda":
        yield
        return
    module_cuda, tensor_cuda = torch.nn.Module.cuda, torch.Tensor.cuda
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.cuda, torch.Tensor.cuda = module_cuda, tensor_cuda  # type: ignore[method-assign]


def bench_authors(path: Path, config: FlowMoConfig, args: Namespace, device: torch.device) -> dict:
    """Steps/s of the release's training step, as its train.py loop body runs it (no data loading)."""
    from mup import MuAdam

    models, train_utils, base = import_authors(path)
    cfg = authors_config(base, config, args.batch, args.grad_accum)
    train_module = _authors_train_module(path)
    train_module.BFLOAT16_IS_AVAILABLE = device.type == "cuda"
    torch.manual_seed(0)
    with cuda_calls_stay_on_cpu(device):
        model = train_utils.build_model(cfg).to(device)
    optimizer = MuAdam(model.parameters(), lr=cfg.opt.lr, betas=(cfg.opt.beta1, cfg.opt.beta2))
    initial_norms = {k: torch.linalg.norm(v) for k, v in models.get_weights_to_fix(model)}
    ema = train_utils.SimpleEMA(model, decay=cfg.model.ema_decay)
    mse = lambda x, y: (x - y).pow(2).mean(dim=(1, 2, 3))  # noqa: E731  (their LPIPS returns one value per image)
    aux_state = {"lpips_model": mse}
    batch = {"image": torch.rand(args.batch, 3, config.image_size, config.image_size, device=device) * 2 - 1}
    count = {"step": 0}
    model.no_sync = _no_sync  # their loop wraps every chunk but the last in DDP's no_sync

    def step() -> None:
        train_module.train_step(cfg, model, batch, optimizer, aux_state)
        with torch.no_grad():
            for name, weight in models.get_weights_to_fix(model):
                weight.data = weight / torch.linalg.norm(weight) * initial_norms[name]
        ema.update(model, step=count["step"])
        count["step"] += 1

    return timed_steps(step, args, device)


def bench_authors_decode(path: Path, config: FlowMoConfig, args: Namespace, device: torch.device) -> dict:
    """Images/s of the release's ``reconstruct`` with its eval sampler (25 steps, cfg 1.5)."""
    _, train_utils, base = import_authors(path)
    cfg = authors_config(base, config, args.batch, 1)
    cfg.model.codebook_size_for_entropy = 1  # their README's test-time setting
    torch.manual_seed(0)
    with cuda_calls_stay_on_cpu(device):
        model = train_utils.build_model(cfg).to(device).eval()
    images = torch.rand(args.batch, 3, config.image_size, config.image_size, device=device) * 2 - 1

    def step() -> None:
        with torch.no_grad(), cuda_calls_stay_on_cpu(device):
            model.reconstruct(images)

    return timed_steps(step, args, device)


def _no_sync() -> Any:
    return nullcontext()


def _authors_train_module(path: Path) -> Any:
    import importlib

    sys.path.insert(0, str(path))
    try:
        return importlib.import_module("flowmo.train")
    finally:
        sys.path.remove(str(path))


# ---------------------------------------------------------------------------- our decoding
def bench_decode(config: FlowMoConfig, args: Namespace, device: torch.device) -> dict:
    """Images/s of our ``reconstruct`` with the release's sampler (25 steps, cfg 1.5)."""
    torch.manual_seed(0)
    model = FlowMo(config).to(device).eval()
    if args.compile:
        compile_blocks(model)
    images = torch.rand(args.batch, 3, config.image_size, config.image_size, device=device) * 2 - 1
    precision = PRECISION[args.dtype]

    def step() -> None:
        with torch.inference_mode(), autocast(device, precision):
            model.reconstruct(images, steps=25, cfg=1.5)

    return timed_steps(step, args, device)


# ---------------------------------------------------------------------------- generators
def build_generator_model(name: str, device: torch.device) -> Any:
    import yaml

    from generator import GeneratorConfig
    from generator.base import build_generator

    yaml_name, sizes, seq_len, vocab = GENERATORS[name]
    fields = yaml.safe_load((ROOT / "configs" / "generator" / f"{yaml_name}.yaml").read_text())
    fields.update(sizes, seq_len=seq_len, vocab_size=vocab, num_classes=10)
    torch.manual_seed(0)
    return build_generator(GeneratorConfig.from_dict(fields)).to(device)


def bench_generator_train(name: str, args: Namespace, device: torch.device) -> dict:
    """Steps/s of a generator's training step: ``training_loss`` forward/backward and AdamW."""
    model = build_generator_model(name, device).train()
    if args.compile:
        compile_blocks(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    indices = torch.randint(0, model.vocab_size, (args.batch, model.seq_len), device=device)
    classes = torch.randint(0, model.num_classes, (args.batch,), device=device)
    precision = PRECISION[args.dtype]

    def step() -> None:
        with autocast(device, precision):
            loss = model.training_loss(indices, classes).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed_steps(step, args, device)


def bench_generator_sample(name: str, args: Namespace, device: torch.device) -> dict:
    """Images/s of ``generate`` for ``args.batch`` class ids (MaskGIT 8 steps; AR through its KV cache)."""
    from runkit.acceleration import compile_for_inference

    model = build_generator_model(name, device).eval()
    if args.compile:
        compile_for_inference([model])  # AR stays eager (its eager_sampling_reason)
        if getattr(model, "eager_sampling_reason", None):
            compile_blocks(model)  # measured anyway, to show why it stays eager
    class_ids = [i % 10 for i in range(args.batch)]
    precision = PRECISION[args.dtype]
    kwargs = {"num_steps": 8} if model.model_type == "maskgit" else {}

    def step() -> None:
        with torch.inference_mode(), autocast(device, precision):
            model.generate(class_ids, generator=torch.Generator(device).manual_seed(0), **kwargs)

    return timed_steps(step, args, device)


# ---------------------------------------------------------------------------- the CLI at its defaults
def run_cli(name: str, mode: str, args: Namespace, workdir: Path) -> dict:
    """``python -m tokenizer.train`` with the config's recipe and defaults (``mode`` "auto"), or forced to
    eager fp32 (``mode`` "eager fp32": what the CLI ran before compile and the bf16 rule), stopped once
    its summary.json records ``args.cli_steps`` steady steps; returns that summary."""
    _batch, _accum, overrides = SETUPS[name]
    if mode == "eager fp32":
        overrides = [*overrides, "train.compile=false", "train.mixed_precision=no"]
    run_dir = workdir / f"cli_{name}_{mode.replace(' ', '_')}"
    extra = []
    if name == "photos32":
        photos = prepare_photos(workdir)
        extra = [f"data.root={photos}/train", f"data.val_root={photos}/val"]
    command = [sys.executable, "-m", "tokenizer.train", *overrides, *extra, f"run_dir={run_dir}", "resume=none",
               "train.max_steps=100000", f"checkpoint.every={args.cli_every}", "checkpoint.keep_last=1",
               "log.images_every=0", "log.val_every=0"]
    summary_path = run_dir / "summary.json"
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=fresh_cache_env(workdir))
    first_line = ""
    try:
        while process.poll() is None:
            if summary_path.is_file():
                summary = json.loads(summary_path.read_text())
                if summary["steady_steps"] >= args.cli_steps:
                    break
            time.sleep(1.0)
    finally:
        process.kill()
        output = process.stdout.read() if process.stdout else ""
        process.wait()
    first_line = next((line for line in output.splitlines() if line.startswith("compile:")), "")
    if not summary_path.is_file():
        raise RuntimeError(f"the training CLI wrote no summary.json:\n{output[-2000:]}")
    return {**json.loads(summary_path.read_text()), "first_line": first_line}


def prepare_photos(workdir: Path) -> Path:
    out = workdir / "photos"
    if not (out / "train").is_dir():
        subprocess.run([sys.executable, "-m", "imagedata.prepare_scikit_photos", f"out={out}"], cwd=ROOT, check=True,
                       capture_output=True)
    return out


def fresh_cache_env(workdir: Path) -> dict[str, str]:
    """The environment with a new, empty inductor cache (a cold compile)."""
    return {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(dir=workdir, prefix="inductor_")}


# ---------------------------------------------------------------------------- rows in subprocesses
def measure_row(kind: str, name: str, mode: str, args: Namespace) -> dict:
    """One measurement in this process (the subprocess side of :func:`run_row`)."""
    device = torch.device(args.device)
    compiled, dtype = mode.split(" ") if mode != "release" else ("eager", "fp32")
    if kind.startswith("gen-"):
        options = Namespace(batch=args.gen_batch if kind == "gen-train" else args.gen_sample_batch,
                            compile=compiled == "compile", dtype=dtype,
                            steps=args.gen_steps[name] if kind == "gen-train" else 2, warmup=2)
        bench_fn = bench_generator_train if kind == "gen-train" else bench_generator_sample
        return bench_fn(name, options, device)
    config = load_config(name)
    batch, accum, _ = SETUPS[name]
    options = Namespace(batch=batch, grad_accum=accum, k=8, steps=args.steps[name], dtype=dtype,
                        grad_checkpointing=False, no_sampler_checkpointing=False, compile=compiled == "compile",
                        warmup=2)
    if kind == "train":
        if mode == "release":
            return bench_authors(args.authors_code, config, options, device)
        return bench("1a", config, options, device)
    options.batch, options.steps, options.warmup = args.decode_batch, args.decode_steps, 1
    if mode == "release":
        return bench_authors_decode(args.authors_code, config, options, device)
    return bench_decode(config, options, device)


def run_row(kind: str, name: str, mode: str, args: Namespace, workdir: Path) -> dict:
    if kind == "cli":
        return run_cli(name, mode, args, workdir)
    command = [sys.executable, str(Path(__file__).resolve()), "--row", kind, name, mode, *args.passthrough]
    done = subprocess.run(command, capture_output=True, text=True, env=fresh_cache_env(workdir))
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {name} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plan(args: Namespace) -> list[tuple[str, str, str]]:
    rows = []
    for name in args.generators:
        rows += [(kind, name, mode) for kind in args.gen_sections for mode in args.modes]
    for name in args.configs:
        for kind in args.sections:
            if kind == "cli":
                rows += [("cli", name, mode) for mode in args.cli_modes]
                continue
            if args.authors_code:
                rows.append((kind, name, "release"))
            rows += [(kind, name, mode) for mode in args.modes]
    return rows


def print_table(results: dict[tuple[str, str, str], list[dict]], args: Namespace) -> None:
    print(f"| section | config | code, mode | steps/s (images/s) | warm-up s | vs release | vs ours eager fp32 "
          f"| rounds |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (kind, name, mode), runs in results.items():
        per_image = kind in ("decode", "gen-sample")
        speed = statistics.median(r["images_per_s"] if per_image else r["steps_per_s"] for r in runs)
        warmup = runs[0]["warmup_s"]

        def ratio(base_mode: str, base_kind: str) -> str:
            # A CLI row against the CLI forced to eager fp32, or else the bare training step's row.
            base = results.get((base_kind, name, base_mode)) if base_kind == "cli" and base_mode != "release" else None
            base = base or results.get(("train" if base_kind == "cli" else base_kind, name, base_mode))
            if not base:
                return "-"
            key = "images_per_s" if per_image else "steps_per_s"
            return f"{speed / statistics.median(r[key] for r in base):.2f}x"

        shown = f"({speed:.2f})" if per_image else f"{speed:.3f}"
        label = {"release": "release (authors' code as shipped: @torch.compile'd encode/decode), fp32"}.get(mode, f"ours, {mode}")
        if kind == "cli":
            precision = "fp32" if runs[0]["mixed_precision"] == "no" else runs[0]["mixed_precision"]
            forced = "forced" if mode != "auto" else "defaults"
            label = (f"ours, `python -m tokenizer.train` {forced}: compile {'on' if runs[0]['compile'] else 'off'}, "
                     f"{precision}")
        print(f"| {kind} | {name} | {label} | {shown} | {warmup:.1f} | {ratio('release', kind)} "
              f"| {ratio('eager fp32', kind)} | {len(runs)} |")
    for (kind, name, mode), runs in results.items():
        if kind == "cli":
            print(f"\n{name} CLI ({mode}) first line: `{runs[0]['first_line']}`")


def parse_args(argv: list[str] | None = None) -> Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,digits,photos32,small64")
    parser.add_argument("--sections", default="train,cli,decode", help="comma list of train, cli, decode")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--authors-code", type=Path, help="local checkout of the authors' FlowMo repository")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    parser.add_argument("--steps", default="tiny:20,digits:40,photos32:40,small64:6",
                        help="timed training steps per row, per config")
    parser.add_argument("--decode-batch", type=int, default=8)
    parser.add_argument("--decode-steps", type=int, default=2, help="timed reconstruct calls per row")
    parser.add_argument("--cli-steps", type=int, default=30, help="steady steps the CLI row waits for")
    parser.add_argument("--cli-modes", default="auto,eager fp32", help="comma list: auto (the defaults), eager fp32")
    parser.add_argument("--cli-every", type=int, default=20, help="the CLI row's checkpoint interval")
    parser.add_argument("--generators", default="digits_maskgit,digits_ar,small_maskgit",
                        help=f"comma list of {', '.join(GENERATORS)} (empty: none)")
    parser.add_argument("--gen-sections", default="gen-train,gen-sample")
    parser.add_argument("--gen-batch", type=int, default=64)
    parser.add_argument("--gen-steps", default="digits_maskgit:20,digits_ar:20,small_maskgit:4",
                        help="timed generator training steps per row, per generator")
    parser.add_argument("--gen-sample-batch", type=int, default=20, help="images per generate call (2 per class)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--row", nargs=3, metavar=("KIND", "CONFIG", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    if "--row" in args.passthrough:
        i = args.passthrough.index("--row")
        del args.passthrough[i:i + 4]
    args.configs = [c for c in args.configs.split(",") if c]
    args.sections = [s for s in args.sections.split(",") if s]
    args.generators = [g for g in args.generators.split(",") if g]
    args.gen_sections = [s for s in args.gen_sections.split(",") if s]
    args.cli_modes = [m.strip() for m in args.cli_modes.split(",") if m.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.steps = {name: int(n) for name, n in (item.split(":") for item in args.steps.split(","))}
    args.gen_steps = {name: int(n) for name, n in (item.split(":") for item in args.gen_steps.split(","))}
    unknown = [c for c in args.configs if c not in SETUPS] + [s for s in args.sections if s not in
                                                              ("train", "cli", "decode")]
    unknown += [g for g in args.generators if g not in GENERATORS]
    unknown += [s for s in args.gen_sections if s not in ("gen-train", "gen-sample")]
    unknown += [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown config, section or mode: {unknown}")
    return args


def main() -> None:
    args = parse_args()
    if args.row:
        print(json.dumps(measure_row(*args.row, args)))
        return
    rows = plan(args)
    print(f"# {describe(torch.device(args.device))}")
    print(f"# configs {args.configs}, sections {args.sections}, {args.rounds} interleaved rounds; "
          f"timed steps {args.steps}; decode batch {args.decode_batch} (reconstruct, 25 steps, cfg 1.5)")
    results: dict[tuple[str, str, str], list[dict]] = {row: [] for row in rows}
    with tempfile.TemporaryDirectory(prefix="train_speed_") as workdir:
        for round_index in range(args.rounds):
            for row in rows:
                result = run_row(*row, args, Path(workdir))
                results[row].append(result)
                value = result["images_per_s"] if row[0] in ("decode", "gen-sample") else result["steps_per_s"]
                print(f"round {round_index + 1}: {' '.join(row)}: {value:.3f} (warm-up {result['warmup_s']:.1f} s)",
                      file=sys.stderr, flush=True)
    print_table(results, args)


if __name__ == "__main__":
    main()
