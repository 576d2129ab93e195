"""Checkpoint manager, EMA and RNG capture: the pieces exact resume rests on."""

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from runkit.checkpoint import TRAINING_STATE_FILE, CheckpointManager
from runkit.ema import EMA
from runkit.rng import capture_rng_state, restore_rng_state


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    state = torch.load(tmp_path / "rng.pt", weights_only=True)
    restore_rng_state(state)
    assert _draws() == expected


def test_ema_applies_decay_power_every_n_steps():
    model = nn.Linear(2, 2)
    start = model.weight.detach().clone()
    ema = EMA(model, decay=0.9, update_every=3)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=1)  # skipped: 1 % 3 != 0
    torch.testing.assert_close(ema.shadow["weight"], start)
    ema.update(model, step=3)
    torch.testing.assert_close(ema.shadow["weight"], start + (1 - 0.9**3))
    averaged = ema.averaged_model(model)
    torch.testing.assert_close(averaged.weight, start + (1 - 0.9**3))
    assert not averaged.weight.requires_grad and model.weight.requires_grad


def test_ema_state_dict_round_trip_and_mismatch_error():
    model = nn.Linear(2, 2)
    ema = EMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(2.0)
    ema.update(model, 1)
    other = EMA(nn.Linear(2, 2), 0.1)
    other.load_state_dict(ema.state_dict())
    torch.testing.assert_close(other.shadow["weight"], ema.shadow["weight"])
    assert other.decay == 0.5
    with pytest.raises(ValueError, match="does not match"):
        EMA(nn.Linear(2, 3, bias=False), 0.5).load_state_dict(ema.state_dict())


def test_pruning_keeps_last_and_every(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, keep_every=4)
    for step in range(1, 10):
        manager.save(step, {"step": step})
    assert [p.name for p in manager.step_dirs()] == \
        ["step_00000004", "step_00000008", "step_00000009"]
    assert manager.latest().name == "step_00000009"


def test_export_is_written_inside_the_step_dir(tmp_path):
    manager = CheckpointManager(tmp_path)
    step_dir = manager.save(5, {"step": 5}, export=lambda d: (d / "config.json").write_text("{}"))
    assert (step_dir / "config.json").read_text() == "{}"
    assert CheckpointManager.load_training_state(step_dir)["step"] == 5


def test_crash_mid_save_leaves_no_visible_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"step": 1})

    def crash(_dir):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        manager.save(2, {"step": 2}, export=crash)
    # a leftover temp dir from a hard kill (no finally) is ignored as well
    leftover = manager.root / f".step_00000003.tmp-{os.getpid() + 1}"
    leftover.mkdir()
    (leftover / TRAINING_STATE_FILE).write_bytes(b"partial")
    assert manager.latest().name == "step_00000001"
    assert manager.resolve_resume("auto") == manager.latest()


def test_resolve_resume(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    assert manager.resolve_resume("auto") is None
    assert manager.resolve_resume("none") is None and manager.resolve_resume(None) is None
    step_dir = manager.save(7, {"step": 7})
    assert manager.resolve_resume(str(step_dir)) == step_dir
    assert CheckpointManager(tmp_path / "other").resolve_resume(str(tmp_path / "run")) == step_dir
    with pytest.raises(FileNotFoundError, match="resume="):
        manager.resolve_resume(str(tmp_path / "missing"))
