"""Training state on disk: RNG capture, the EMA of weights, and atomic, pruned checkpoints.

Shared by the tokenizer's and the generator's training loops. A checkpoint is a directory
``run_dir/checkpoints/step_{step:08d}/`` holding ``training_state.pt`` (everything needed to
continue exactly) plus whatever the caller exports next to it (the tokenizer writes its EMA
weights with ``FlowMo.save_pretrained`` so ``tokenizer.loading.load_flowmo(run_dir)`` works).
"""

from __future__ import annotations

import copy
import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

CHECKPOINTS_DIR = "checkpoints"  # the same names tokenizer.loading parses
STEP_PREFIX = "step_"
TRAINING_STATE_FILE = "training_state.pt"
RUN_CONFIG_FILE = "config.yaml"
_TMP_MARK = ".tmp-"
_OLD_MARK = ".old"
# Options that may change when a run is resumed: where it lives and how it logs, not what it trains.
RESUME_FREE_KEYS = ("resume", "resume_force", "run_dir", "init_from", "init_weights", "log", "checkpoint",
                    "data.num_workers")


class DiskFullError(OSError):
    """A checkpoint could not be written because its disk is full (the previous checkpoint is intact)."""


# ---------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as tensors and plain lists.

    The result survives ``torch.save`` / ``torch.load(weights_only=True)``: the numpy state is
    stored as a uint32 tensor plus plain ints, python's as a list.
    """
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": {"kind": str(np_kind), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.uint32).astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored when both sides have CUDA."""
    random.setstate(_to_tuples(state["python"]))
    np_state = state["numpy"]
    keys = np.asarray(torch.as_tensor(np_state["keys"]).numpy(), dtype=np.uint32)
    np.random.set_state((np_state["kind"], keys, int(np_state["pos"]), int(np_state["has_gauss"]),
                         float(np_state["gauss"])))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) != torch.cuda.device_count():
            raise ValueError(f"checkpoint holds RNG states for {len(cuda_states)} CUDA devices, this process sees "
                             f"{torch.cuda.device_count()}: resume with the same visible devices")
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in cuda_states])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, (tuple, list)) else value


# ---------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of a model's floating-point parameters; buffers are copied.

    With ``update_every = n`` the average is refreshed every n-th step with decay ``decay**n``,
    which approximates a per-step EMA of ``decay`` at 1/n of the cost (FlowMo: 0.9999, n = 10).
    The shadow tensors are fp32 on the model's device whatever the model's compute dtype.
    """

    def __init__(self, model: nn.Module, decay: float, update_every: int = 1) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if update_every < 1:
            raise ValueError(f"EMA update_every must be >= 1, got {update_every}")
        self.decay = float(decay)
        self.update_every = int(update_every)
        model = _unwrap(model)
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().float() for name, p in model.named_parameters()}
        self.buffers: dict[str, torch.Tensor] = {
            name: b.detach().clone() for name, b in model.named_buffers()}

    @property
    def effective_decay(self) -> float:
        return self.decay ** self.update_every

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend the model's current weights into the average; a no-op unless ``step % update_every == 0``."""
        if step % self.update_every:
            return
        model = _unwrap(model)
        decay = self.effective_decay
        for name, param in model.named_parameters():
            self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)
        for name, buf in model.named_buffers():
            self.buffers[name].copy_(buf)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (same architecture)."""
        model = _unwrap(model)
        params = dict(model.named_parameters())
        missing = sorted(set(self.shadow) - set(params)) + sorted(set(params) - set(self.shadow))
        if missing:
            raise ValueError(f"EMA and model parameters differ: {missing[:5]}{'...' if len(missing) > 5 else ''}")
        for name, param in params.items():
            param.copy_(self.shadow[name].to(param.dtype))
        for name, buf in model.named_buffers():
            if name in self.buffers:
                buf.copy_(self.buffers[name])

    def averaged_model(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` carrying the EMA weights, in eval mode with no gradients."""
        averaged = copy.deepcopy(_unwrap(model))
        self.copy_to(averaged)
        averaged.eval().requires_grad_(False)
        return averaged

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "update_every": self.update_every,
                "shadow": dict(self.shadow), "buffers": dict(self.buffers)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["shadow"]) != set(self.shadow):
            diff = sorted(set(state["shadow"]) ^ set(self.shadow))
            raise ValueError(f"EMA state does not match the model: differing parameters {diff[:5]}")
        self.decay = float(state["decay"])
        self.update_every = int(state["update_every"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        for name, value in state.get("buffers", {}).items():
            if name in self.buffers:
                self.buffers[name].copy_(value)


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP / torch.compile wrappers, so parameter names stay stable."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


# ---------------------------------------------------------------------------- checkpoints
def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def parse_step(path: str | os.PathLike) -> int | None:
    """The step of a ``step_N`` directory name, or None for anything else (temp dirs included)."""
    name = Path(path).name
    if not name.startswith(STEP_PREFIX):
        return None
    digits = name[len(STEP_PREFIX):]
    return int(digits) if digits.isdigit() else None


class CheckpointManager:
    """Atomic, pruned checkpoints in ``run_dir/checkpoints/step_{step:08d}/``.

    A step directory is built under a hidden temporary name, fsynced and renamed into place,
    so a reader (or a resume after a kill) only ever sees complete checkpoints. Pruning keeps
    the newest ``keep_last`` plus every step that is a multiple of ``keep_every``.
    """

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 3, keep_every: int | None = None) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        if keep_every is not None and keep_every < 1:
            raise ValueError(f"keep_every must be a positive number of steps or None, got {keep_every}")
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / CHECKPOINTS_DIR
        self.keep_last = int(keep_last)
        self.keep_every = keep_every

    def step_dirs(self) -> list[Path]:
        """Complete step directories, oldest first."""
        if not self.root.is_dir():
            return []
        dirs = [p for p in self.root.iterdir()
                if p.is_dir() and parse_step(p) is not None and (p / TRAINING_STATE_FILE).is_file()]
        return sorted(dirs, key=parse_step)

    def latest(self) -> Path | None:
        dirs = self.step_dirs()
        return dirs[-1] if dirs else None

    def save(self, step: int, training_state: dict[str, Any],
             export: Callable[[Path], None] | None = None) -> Path:
        """Write ``training_state.pt`` (+ ``export(dir)``) for ``step`` atomically, then prune."""
        if step < 0:
            raise ValueError(f"checkpoint step must be >= 0, got {step}")
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / step_dir_name(step)
        tmp = self.root / f".{final.name}{_TMP_MARK}{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            torch.save(training_state, tmp / TRAINING_STATE_FILE)
            if export is not None:
                export(tmp)
            _fsync_tree(tmp)
            if final.exists():  # re-saving a step (e.g. the final one after a periodic save)
                old = self.root / f".{final.name}{_OLD_MARK}{_TMP_MARK}{os.getpid()}"
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old)
            else:
                os.rename(tmp, final)
            _fsync_dir(self.root)
        except (OSError, RuntimeError) as error:
            if not _disk_full(error):
                raise
            previous = self.latest()
            raise DiskFullError(
                errno.ENOSPC, f"disk full: checkpoint step {step} could not be written to {self.root} ({error}). "
                f"The partial copy is removed; the previous checkpoint "
                f"{previous if previous is not None else '(none yet)'} is intact. Free space on that disk and "
                "start the same command again to resume") from error
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        self.prune()
        return final

    def prune(self) -> list[Path]:
        """Delete complete step dirs not kept by the policy."""
        dirs = self.step_dirs()
        keep = set(dirs[-self.keep_last:])
        if self.keep_every:
            keep |= {d for d in dirs if parse_step(d) % self.keep_every == 0}
        removed = [d for d in dirs if d not in keep]
        for d in removed:
            shutil.rmtree(d)
        return removed

    def remove_stale_temp_dirs(self) -> list[Path]:
        """Delete the partial step directories (``.step_N.tmp-PID``) of processes killed mid-save.

        Those of a live process (a save in progress) are kept. A ``.step_N.old.tmp-PID`` whose
        ``step_N`` is missing is the complete checkpoint a killed re-save had moved aside: it is
        renamed back, not deleted. Returns the removed paths.
        """
        if not self.root.is_dir():
            return []
        removed = []
        for path in sorted(self.root.iterdir()):
            name, _, pid = path.name.rpartition(_TMP_MARK)
            if not (name.startswith(f".{STEP_PREFIX}") and pid.isdigit()) or _process_alive(int(pid)):
                continue
            final = self.root / name[1:].removesuffix(_OLD_MARK)
            if name.endswith(_OLD_MARK) and not final.exists() and (path / TRAINING_STATE_FILE).is_file():
                os.rename(path, final)
                continue
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path)
        return removed

    def resolve_resume(self, resume: str | os.PathLike | None) -> Path | None:
        """``"auto"`` -> the latest checkpoint of this run (or None); ``None``/``"none"`` -> None;
        otherwise a step directory, or a run directory whose latest checkpoint is used."""
        if resume is None or str(resume).lower() in ("none", "null", "", "false"):
            return None
        if str(resume).lower() == "auto":
            return self.latest()
        path = Path(resume)
        if (path / TRAINING_STATE_FILE).is_file():
            return path
        if path.is_dir():
            found = CheckpointManager(path).latest()
            if found is not None:
                return found
        raise FileNotFoundError(f"resume={resume!s}: not a checkpoint directory (with {TRAINING_STATE_FILE}) nor a "
                                f"run directory with complete {CHECKPOINTS_DIR}/{STEP_PREFIX}* checkpoints; "
                                "use resume=auto, resume=none or a valid path")

    @staticmethod
    def load_training_state(step_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        path = Path(step_dir) / TRAINING_STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {step_dir} is not a complete checkpoint")
        return torch.load(path, map_location=map_location, weights_only=True)


def _disk_full(error: BaseException) -> bool:
    """ENOSPC, or torch's zip writer failing on a short write ("unexpected pos N vs M", "file write failed")."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return "unexpected pos" in str(error) or "file write failed" in str(error)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not saving now: its temp dirs are leftovers of a reused PID
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


# ---------------------------------------------------------------------------- resuming
def load_resume_state(manager: CheckpointManager, resume: Any, trainer: str, run_config: Mapping[str, Any],
                      force: bool = False) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to resume and its training state, checked before any model is built.

    Refuses a checkpoint of the other trainer ("tokenizer" / "generator") and, unless ``force``,
    one whose saved run config differs from ``run_config`` outside :data:`RESUME_FREE_KEYS`
    (the message names each differing key). Returns (None, None) when there is nothing to resume.
    """
    resume_dir = manager.resolve_resume(resume)
    if resume_dir is None:
        return None, None
    state = CheckpointManager.load_training_state(resume_dir)
    # Checkpoints written before "trainer" was recorded: only the tokenizer's has a stage.
    kind = state.get("trainer") or ("tokenizer" if "stage" in state else "generator")
    if kind != trainer:
        raise ValueError(f"resume: {resume_dir} is a {kind} training checkpoint, this is {trainer} training; "
                         f"use resume=none or a run_dir of a {trainer} run")
    saved = state.get("run_config")
    if saved is None:
        print(f"note: {resume_dir} predates recorded run configs; its hyperparameters cannot be compared")
        return resume_dir, state
    changed = config_differences(saved, run_config)
    if changed:
        lines = "\n  ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
        if not force:
            raise ValueError(f"resume: {resume_dir} was trained with other settings:\n  {lines}\nResume with the "
                             "same settings, start a new run_dir (or resume=none), or pass resume_force=true to "
                             "continue with the new ones")
        print(f"resume_force=true: continuing {resume_dir} with changed settings:\n  {lines}")
    return resume_dir, state


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                       free: tuple[str, ...] = RESUME_FREE_KEYS) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved, current)} for every leaf that differs, except keys under ``free``."""
    old, new = _flatten(saved), _flatten(current)
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key) and not any(key == f or key.startswith(f + ".") for f in free)}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_run_config(run_dir: Path, text: str, step: int) -> Path | None:
    """Write ``run_dir/config.yaml``; a different existing one is first kept as
    ``config.until_step_N.yaml`` (N: the step this run starts from), which is returned."""
    from .fileio import atomic_write

    path = run_dir / RUN_CONFIG_FILE
    kept = None
    if path.is_file() and path.read_text() != text:
        kept = path.with_name(f"config.until_{step_dir_name(step)}.yaml")
        os.replace(path, kept)
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return kept


def open_run(run_dir: Path, cfg: Any, trainer: str, is_main: bool,
             wait: Callable[[], None]) -> tuple[CheckpointManager, Path | None, dict[str, Any] | None]:
    """What both trainers do before building anything: the run folder's checkpoint manager, stale
    partial checkpoints of a killed run removed, the resume state loaded and checked against ``cfg``
    (:func:`load_resume_state`), and ``config.yaml`` written. Returns (manager, resume_dir, state)."""
    from omegaconf import OmegaConf

    manager = CheckpointManager(run_dir, keep_last=cfg.checkpoint.keep_last, keep_every=cfg.checkpoint.keep_every)
    if is_main:
        for path in manager.remove_stale_temp_dirs():
            print(f"removed {path}: the partial checkpoint of a killed run")
    wait()
    run_config = OmegaConf.to_container(cfg, resolve=True)
    resume_dir, state = load_resume_state(manager, cfg.resume, trainer, run_config, cfg.get("resume_force", False))
    if is_main:
        kept = write_run_config(run_dir, OmegaConf.to_yaml(cfg, resolve=True), state["step"] if state else 0)
        if kept is not None:
            print(f"config.yaml changed; the previous one is kept as {kept}")
    return manager, resume_dir, state


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
