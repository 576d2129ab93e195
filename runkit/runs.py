"""Opening a run folder: stale partial checkpoints removed, the resume checkpoint found and checked
against the run's settings, ``config.yaml`` written. What both trainers do before building anything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from .checkpoint import CheckpointManager, step_dir_name
from .fileio import atomic_write

RUN_CONFIG_FILE = "config.yaml"
# Options that may change when a run is resumed: where it lives and how it logs, not what it trains.
# How fast it runs (train.compile) is free too: a compiled run resumes eagerly and vice versa.
RESUME_FREE_KEYS = ("resume", "resume_force", "run_dir", "init_from", "init_weights", "log", "checkpoint",
                    "data.num_workers", "train.compile")


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
