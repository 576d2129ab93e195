"""log.with: the training run's scalars and images reach the chosen tracker (accelerate's tracker API), and the
exported weights carry a model card with what the run measured."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from generator.train import train
from runkit.tracking import RunLogger, as_uint8_hwc, flat_config, tracker_name
from tokenizer import FlowMo

from test_generator_train import TOKENIZER, config, synthetic_cache


def short_run(tmp_path: Path, *overrides: str) -> dict:
    """A 4-step generator run with a sample grid (an image for the tracker) at its last step."""
    torch.manual_seed(0)
    FlowMo(TOKENIZER).save_pretrained(tmp_path / "tok")
    cache = synthetic_cache(tmp_path / "cache")
    return train(config(tmp_path / "run", cache, "train.max_steps=4", "checkpoint.every=4", "log.samples_every=4",
                        f"tokenizer.checkpoint={tmp_path / 'tok'}", "log.samples_per_class=1", "log.grid_classes=2",
                        "log.decode_steps=1", *overrides))


def exported_record(tmp_path: Path) -> dict:
    step_dir = tmp_path / "run" / "checkpoints" / "step_00000004"
    return json.loads((step_dir / "config.json").read_text())["config"]["extra"]["training"]


def test_tensorboard_is_the_default_and_gets_scalars_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = short_run(tmp_path)
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [point.value for point in events.Scalars("train/loss")] == pytest.approx(summary["losses"])
    assert [image.step for image in events.Images("samples")] == [4]
    record = exported_record(tmp_path)
    assert record["step"] == 4 and record["quality"]["train/loss"] == pytest.approx(summary["losses"][-1])
    assert record["data"]["images"] == 96 and record["data"]["classes"] == 3
    card = (tmp_path / "run" / "checkpoints" / "step_00000004" / "README.md").read_text()
    assert "train/loss" in card and "at training step 4" in card


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed")
def test_mlflow_file_store_gets_scalars_and_images(tmp_path):
    from mlflow.tracking import MlflowClient

    summary = short_run(tmp_path, "log.with=mlflow", "log.project=tracking-test")
    assert not (tmp_path / "run" / "tb").exists()
    client = MlflowClient((tmp_path / "run" / "mlruns").absolute().as_uri())
    experiment = client.get_experiment_by_name("tracking-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx(summary["losses"])
    assert run.data.params["train.max_steps"] == "4"
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any(path.startswith("images/samples+step+4") for path in images), images


def test_none_logs_nowhere_but_the_card_still_records_the_run(tmp_path):
    summary = short_run(tmp_path, "log.with=none")
    assert not (tmp_path / "run" / "tb").exists() and not (tmp_path / "run" / "mlruns").exists()
    assert exported_record(tmp_path)["quality"]["train/loss"] == pytest.approx(summary["losses"][-1])


def test_unknown_or_missing_trackers_are_refused_before_any_work():
    with pytest.raises(ValueError, match="log.with='comet' is not a tracker: choose one of tensorboard, wandb"):
        tracker_name({"with": "comet"})
    assert tracker_name({"with": "none"}) is None and tracker_name({"with": "TensorBoard"}) == "tensorboard"
    for name, package in (("wandb", "wandb"), ("aim", "aim"), ("mlflow", "mlflow-skinny")):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(ModuleNotFoundError, match=f"pip install {package}"):
                tracker_name({"with": name})


def test_images_and_configs_reach_trackers_in_their_forms():
    pixels = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    hwc = as_uint8_hwc(pixels)
    assert hwc.shape == (4, 5, 3) and (hwc == pixels.permute(1, 2, 0).numpy()).all()
    assert (as_uint8_hwc(hwc, "HWC") == hwc).all()
    assert as_uint8_hwc(torch.ones(3, 2, 2) * 0.5).max() == 128
    assert flat_config({"train": {"lr": 0.1, "betas": [0.9, 0.95]}, "run_dir": None}) == {
        "train.lr": 0.1, "train.betas": "[0.9, 0.95]", "run_dir": None}
    logger = RunLogger(accelerator=None, name=None)
    logger.add_scalar("val/psnr", 20.0, 1)
    logger.add_scalar("train/lr", 1e-3, 1)
    logger.add_scalar("val/psnr", 21.5, 2)
    assert logger.card_quality() == {"val/psnr": 21.5}
