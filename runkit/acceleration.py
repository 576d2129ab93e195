"""How a command runs fast on the hardware it finds: autocast precision and torch.compile, each
``auto`` by a rule measured in ``benchmarks/train_speed.md`` or forced by the user, with the reason
said in the command's first lines ("compile: on (...); precision: bf16 (...)").

The rules, from that benchmark on a 2-core CPU with native bf16 matmuls and on CUDA:

- **precision**: bf16 autocast on CUDA devices that support it. On a CPU, bf16 only where the CPU
  multiplies bf16 natively (AMX or AVX512-BF16) *and* the model's transformer is at least
  :data:`CPU_BF16_MIN_WIDTH` wide: narrower matrices spend more on casts than the bf16 kernels save
  (the 96-wide digits tokenizer and the 128-wide digits generators train slower in bf16).
- **compile**: regional compilation (:func:`compile_blocks`) of the repeated transformer blocks, on
  when inductor has a compiler for the device (a C++ compiler on CPU, Triton on CUDA) and the job is
  long enough to pay back the warm-up: :data:`COMPILE_MIN_STEPS` training steps, or
  :data:`COMPILE_MIN_BATCHES` batches for inference (a gFID or rFID run over a large split; a short
  sampling call or the demo stays eager). Every block of one shape reuses one compiled graph, so the
  warm-up is one block's compile (tens of seconds on 2 cores), not the whole network's (minutes).
  A model whose sampling does not compile well says so in ``eager_sampling_reason`` (the AR model:
  its KV-cache decoding changes shapes at every position) and samples eagerly. A model whose
  training step measured no faster compiled on a CPU says so in ``cpu_training_compile_gain``
  (False for the generators: their small blocks gained nothing, or lost up to 10 %, on 2 cores),
  and trains eagerly there under ``auto``.
"""

from __future__ import annotations

import functools
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, Sequence

import torch
from torch import nn

PRECISIONS = ("auto", "no", "bf16", "fp16")
CPU_BF16_MIN_WIDTH = 256
COMPILE_MIN_STEPS = 500
COMPILE_MIN_BATCHES = 50


@dataclass(frozen=True)
class Choice:
    """A resolved setting and why it was chosen."""

    value: Any
    reason: str


@functools.lru_cache(maxsize=None)
def cpu_native_bf16() -> str | None:
    """The CPU's native bf16 matrix instructions ("AMX" or "AVX512-BF16"), or None."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


def choose_precision(requested: str, device: torch.device | str, width: int | None = None) -> Choice:
    """accelerate's ``mixed_precision`` ("no" | "bf16" | "fp16") for a config value on ``device``.

    ``width``: the model's transformer width, which decides ``auto`` on a CPU (see the module rules);
    None (unknown) keeps fp32 there.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"mixed_precision={requested!r}; choose one of {list(PRECISIONS)}")
    if requested != "auto":
        return Choice(requested, "forced by mixed_precision=" + requested)
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Choice("bf16", "CUDA device with bf16")
        return Choice("no", "this CUDA device has no bf16")
    if device.type != "cpu":
        return Choice("no", f"no measured rule for {device.type}")
    native = cpu_native_bf16()
    if native is None:
        return Choice("no", "CPU without native bf16 (no AMX or AVX512-BF16)")
    if width is None or width < CPU_BF16_MIN_WIDTH:
        shown = "unknown" if width is None else str(width)
        return Choice("no", f"CPU has {native}, but the model is {shown} wide (< {CPU_BF16_MIN_WIDTH}: bf16 "
                            "measured slower)")
    return Choice("bf16", f"CPU has {native}, model {width} wide")


def compiler_problem(device: torch.device | str) -> str | None:
    """Why inductor cannot compile for ``device`` here, or None."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed"
        return None
    if device.type == "cpu":
        if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
            return "no C++ compiler on PATH"
        return None
    return f"no compiler rule for {device.type}"


def choose_compile(requested: Any, device: torch.device | str, work: int | None,
                   min_work: int = COMPILE_MIN_STEPS, unit: str = "steps", cpu_gain: bool = True) -> Choice:
    """Whether to compile: ``requested`` is auto | true | false; ``work`` the job's length in ``unit``
    (training steps left, batches to decode) against the ``min_work`` that pays back the warm-up;
    ``cpu_gain`` False: the model measured no faster compiled on a CPU, so auto stays eager there."""
    if requested not in ("auto", True, False):
        raise ValueError(f"compile={requested!r}; choose auto, true or false")
    if requested is False:
        return Choice(False, "forced by compile=false")
    problem = compiler_problem(device)
    if requested is True:
        if problem:
            raise ValueError(f"compile=true, but torch.compile cannot run here: {problem}; use compile=false")
        return Choice(True, "forced by compile=true")
    if problem:
        return Choice(False, problem)
    if torch.device(device).type == "cpu" and not cpu_gain:
        return Choice(False, "this model measured no faster compiled on a CPU (benchmarks/train_speed.md)")
    if work is not None and work < min_work:
        return Choice(False, f"{work} {unit} (< {min_work}: the warm-up would not pay back)")
    return Choice(True, "inductor " + ("with Triton" if torch.device(device).type == "cuda" else "C++ on CPU")
                  + (f", {work} {unit}" if work is not None else ""))


def describe(compile_choice: Choice, precision: Choice) -> str:
    """The line a command starts with: ``compile: on (why); precision: bf16 (why)``."""
    name = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[precision.value]
    return (f"compile: {'on' if compile_choice.value else 'off'} ({compile_choice.reason}); "
            f"precision: {name} ({precision.reason})")


def repeated_blocks(module: nn.Module) -> list[nn.Module]:
    """The entries of every ModuleList under ``module`` whose entries all share one class (the
    transformer block stacks)."""
    blocks = []
    for child in module.modules():
        if isinstance(child, nn.ModuleList) and len(child) > 0 and len({type(m) for m in child}) == 1:
            blocks.extend(child)
    return blocks


def compile_blocks(module: nn.Module, **options: Any) -> int:
    """Compile every repeated transformer block of ``module`` in place (``nn.Module.compile``, so
    parameter names and the state dict are unchanged); returns how many blocks were compiled.

    Call it on the training model *after* any deep copy (an EMA copy must stay eager).
    """
    blocks = repeated_blocks(module)
    for block in blocks:
        block.compile(**options)
    return len(blocks)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of an accelerate ``mixed_precision`` value (None for "no")."""
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device | str, precision: str) -> ContextManager[Any]:
    """Autocast to the dtype of ``precision`` ("no" | "bf16" | "fp16") on ``device``; "no": nothing."""
    dtype = autocast_dtype(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else nullcontext()


def inference_choices(models: Sequence[nn.Module], requested_compile: Any, requested_precision: str,
                      device: torch.device | str, batches: int | None) -> tuple[Choice, Choice]:
    """(compile, precision) for an inference job of ``batches`` batches through ``models`` (each with
    a ``transformer_width``): one precision for the chain, by its widest transformer."""
    width = max(int(m.transformer_width) for m in models)
    precision = choose_precision(requested_precision, device, width)
    return choose_compile(requested_compile, device, batches, COMPILE_MIN_BATCHES, "batches"), precision


def compile_for_inference(models: Sequence[nn.Module]) -> list[str]:
    """Compile the blocks of each model that samples well compiled; returns a note for each that
    stays eager (its ``eager_sampling_reason``)."""
    notes = []
    for model in models:
        reason = getattr(model, "eager_sampling_reason", None)
        if reason:
            notes.append(f"{type(model).__name__} samples eagerly: {reason}")
        else:
            compile_blocks(model)
    return notes
