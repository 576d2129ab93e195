"""What every entry point needs from its command line: user paths, the run folder, the device,
DataLoader workers.

Hydra's runs keep the launch directory as the working directory (``chdir: false``), but
``to_absolute_path`` is still the one documented way to read a user's relative path; outside
Hydra (tests, Python callers) paths are taken as given. Hydra itself writes nothing
(configs/common/hydra.yaml): each command's output folder is one of its own options.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch


def hydra_running() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def command_line(module: str) -> str | None:
    """``python -m <module> <overrides>``: the command Hydra is running, as a model card records it; None
    outside a Hydra command line (tests, Python callers)."""
    if not hydra_running():
        return None
    import shlex

    from hydra.core.hydra_config import HydraConfig

    return shlex.join(["python", "-m", module, *HydraConfig.get().overrides.task])


def user_path(path: str | os.PathLike) -> Path:
    """A path as the user typed it: relative to the launch directory when Hydra runs."""
    if hydra_running():
        from hydra.utils import to_absolute_path

        return Path(to_absolute_path(str(path)))
    return Path(path).expanduser()


def output_directory(explicit: str | os.PathLike | None, option: str) -> Path:
    """The folder a command writes into, as the user typed it (the configs default to timestamped
    folders under outputs/); an unset option is an error, never the working directory."""
    if not explicit:
        raise ValueError(f"{option} is not set: pass {option}=<folder>")
    return user_path(explicit)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available; use device=cpu")
    return device


def loader_workers(requested: int | None) -> int:
    """DataLoader worker processes: ``requested`` capped at the CPUs this process may use, less one
    for the main process (more workers only contend, and torch warns about them)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(0, min(int(requested or 0), cpus - 1))


# ---------------------------------------------------------------------------- numeric options
# A rule is "int|float >= N", "int|float > N" or "int|float in [a, b]" (round brackets: open
# ends), optionally followed by " or null". Entry points check their whole table when the config
# is read, before anything is built, so a bad value fails in a second with its key named.
_BOUND_RULE = re.compile(r"^(int|float) (>=|>) (\S+)$")
_RANGE_RULE = re.compile(r"^(int|float) in ([\[(])(\S+), (\S+)([\])])$")

TRAINING_RULES = {  # shared by tokenizer.train and generator.train
    "seed": "int >= 0",
    "train.batch_size": "int >= 1", "train.grad_accum": "int >= 1", "train.max_steps": "int >= 1",
    "train.lr": "float > 0", "train.warmup_steps": "int >= 0", "train.weight_decay": "float >= 0",
    "train.grad_clip": "float > 0 or null", "train.ema_decay": "float in [0, 1]", "train.ema_every": "int >= 1",
    "train.max_nan_steps": "int >= 1",
    "log.every": "int >= 1",
    "checkpoint.every": "int >= 1", "checkpoint.keep_last": "int >= 1", "checkpoint.keep_every": "int >= 1 or null",
}
SAMPLING_RULES = {  # generator.generate options, as generator.sample and generator.eval_gfid take them
    "sampling.num_steps": "int >= 1 or null", "sampling.cfg_scale": "float >= 0 or null",
    "sampling.temperature": "float > 0 or null", "sampling.choice_temperature": "float >= 0 or null",
    "sampling.top_k": "int >= 1 or null", "sampling.top_p": "float in (0, 1] or null",
}


def check_numbers(cfg: Any, rules: Mapping[str, str]) -> None:
    """Check every option named in ``rules`` (see above); one ValueError lists each bad value with its rule."""
    from omegaconf import OmegaConf

    problems = []
    for key, rule in rules.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not _follows(value, rule):
            problems.append(f"{key}={value!r}: must be {'an integer' if rule.startswith('int') else 'a number'} "
                            f"{rule.split(' ', 1)[1]}")
    if problems:
        raise ValueError("invalid option" + ("s" if len(problems) > 1 else "") + ":\n  " + "\n  ".join(problems))


def _follows(value: Any, rule: str) -> bool:
    rule, nullable, _ = rule.partition(" or null")
    if value is None:
        return bool(nullable)
    bound, interval = _BOUND_RULE.match(rule), _RANGE_RULE.match(rule)
    match = bound or interval
    if match is None:
        raise ValueError(f"malformed option rule {rule!r}")
    kind = match.group(1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
        return False
    if not math.isfinite(value):
        return False
    if bound:
        limit = float(bound.group(3))
        return value >= limit if bound.group(2) == ">=" else value > limit
    _, opening, low, high, closing = interval.groups()
    low, high = float(low), float(high)
    return (value >= low if opening == "[" else value > low) and (value <= high if closing == "]" else value < high)
