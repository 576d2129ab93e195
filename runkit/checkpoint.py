"""Atomic, pruned checkpoints of a run, and the one way to find a run's newest one.

A checkpoint is a directory ``run_dir/checkpoints/step_{step:08d}/`` holding ``training_state.pt``
(everything needed to continue exactly) plus whatever the trainer exports next to it (its EMA
model as ``save_pretrained`` writes it, so ``load_flowmo(run_dir)`` / ``load_generator(run_dir)`` work).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

CHECKPOINTS_DIR = "checkpoints"
STEP_PREFIX = "step_"
TRAINING_STATE_FILE = "training_state.pt"
_TMP_MARK = ".tmp-"
_OLD_MARK = ".old"


class DiskFullError(OSError):
    """A checkpoint could not be written because its disk is full (the previous checkpoint is intact)."""


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def parse_step(path: str | os.PathLike) -> int | None:
    """The step of a ``step_N`` directory name, or None for anything else (temp dirs included)."""
    name = Path(path).name
    if not name.startswith(STEP_PREFIX):
        return None
    digits = name[len(STEP_PREFIX):]
    return int(digits) if digits.isdigit() else None


def step_dirs(run_dir: str | os.PathLike, marker: str = TRAINING_STATE_FILE) -> list[Path]:
    """The ``checkpoints/step_N`` directories of a run that hold ``marker``, oldest first.

    Trainers look for their training state; model loaders pass the exported model's config file.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and parse_step(p) is not None and (p / marker).is_file()]
    return sorted(dirs, key=parse_step)


def latest_step_dir(run_dir: str | os.PathLike, marker: str = TRAINING_STATE_FILE) -> Path | None:
    """The newest complete checkpoint directory of a run (see :func:`step_dirs`), or None."""
    dirs = step_dirs(run_dir, marker)
    return dirs[-1] if dirs else None


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
        return step_dirs(self.run_dir)

    def latest(self) -> Path | None:
        return latest_step_dir(self.run_dir)

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
