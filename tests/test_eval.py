"""tokenizer.eval: a JSON report with every metric, UNCALIBRATED marks under random weights."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tokenizer import FlowMo, FlowMoConfig
from runkit.checkpoint import CheckpointManager
from tokenizer.eval import evaluate, evaluate_continuously

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
SMALL = dict(image_size=32, patch_size=4, code_length=4, context_dim=12, lfq_bits=6, enc_width=0.5, dec_width=0.5,
             enc_depth=1, dec_depth=1, num_heads=3)


def make_cfg(checkpoint, out_dir, *overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("tokenizer_eval", overrides=["data=digits", f"checkpoint={checkpoint}", f"out_dir={out_dir}",
                                                    "subsample=6", "batch_size=4", "steps=2", "grid_images=4",
                                                    *overrides])


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    FlowMo(FlowMoConfig(**SMALL)).save_pretrained(path)
    return path


@pytest.mark.slow
def test_eval_report_marks_random_weights_uncalibrated(saved_model, tmp_path):
    # features=inception: the random Inception network (digits would otherwise use its classifier).
    report = evaluate(make_cfg(saved_model, tmp_path, "allow_random_weights=true", "features=inception"))
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["feature_space"] == "Inception-v3"
    assert written["num_images"] == 6 and set(written["metrics"]) == {"rfid", "psnr", "ssim", "lpips_alex",
                                                                      "lpips_vgg", "bpp"}
    assert written["metrics"]["bpp"] == pytest.approx(4 * 12 / 32**2)
    assert set(written["uncalibrated"]) == {"rfid", "lpips_alex", "lpips_vgg"}
    for line in written["lines"]:
        calibrated = line.split(":")[0] in ("psnr", "ssim", "bpp")
        assert ("UNCALIBRATED" in line) != calibrated, line
    assert len(list((tmp_path / "reconstructions").glob("*.png"))) == 6
    assert (tmp_path / "comparison.png").is_file()
    assert report["metrics"]["psnr"] == written["metrics"]["psnr"]


def test_eval_on_digits_reports_rfid_in_the_classifier_feature_space(saved_model, tmp_path, monkeypatch):
    """data=digits names its classifier: a real (calibrated) rFID, labelled for its feature space."""
    monkeypatch.chdir(Path(CONFIGS).parent)  # the data config names the classifier relative to the repository
    report = evaluate(make_cfg(saved_model, tmp_path, "metrics=[rfid,psnr]"))  # no Inception weights needed
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["feature_space"] == "digits classifier features"
    assert written["calibrated"]["rfid"] is True and written["uncalibrated"] == []
    assert written["metrics"]["rfid"] > 0  # a barely trained tokenizer reconstructs visibly differently
    assert [line.split(": ")[0] for line in written["lines"]] == ["psnr", "rFID (digits classifier features)", "bpp"]
    assert not any("UNCALIBRATED" in line for line in written["lines"])
    assert report["metrics"]["rfid"] == written["metrics"]["rfid"]


def test_eval_is_deterministic_and_independent_of_batch_size(saved_model, tmp_path):
    a = evaluate(make_cfg(saved_model, tmp_path / "a", "metrics=[psnr,ssim]", "batch_size=4"))
    b = evaluate(make_cfg(saved_model, tmp_path / "b", "metrics=[psnr,ssim]", "batch_size=3"))
    assert a["metrics"]["psnr"] == pytest.approx(b["metrics"]["psnr"], abs=1e-3)
    assert a["lines"][0].startswith("psnr") and "UNCALIBRATED" not in " ".join(a["lines"])


def test_missing_weights_name_the_option(saved_model, tmp_path):
    from evaluation.perceptual import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="lpips_alex_weights"):
        evaluate(make_cfg(saved_model, tmp_path, "metrics=[lpips_alex]"))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(make_cfg(saved_model, tmp_path, "metrics=[fid]"))
    with pytest.raises(MissingWeightsError, match="inception_weights="):
        evaluate(make_cfg(saved_model, tmp_path, "metrics=[rfid]", "features=inception"))
    with pytest.raises(MissingWeightsError, match="missing.pth"):
        evaluate(make_cfg(saved_model, tmp_path, "metrics=[rfid]", "features=inception",
                          f"inception_weights={tmp_path / 'missing.pth'}", "allow_random_weights=true"))
    assert not (tmp_path / "reconstructions").exists()  # refused before reconstructing anything
    with pytest.raises(FileNotFoundError, match="not a feature classifier"):
        evaluate(make_cfg(saved_model, tmp_path, "metrics=[rfid]", f"feature_classifier={tmp_path / 'none'}"))


def test_continuous_evaluates_each_checkpoint_once(saved_model, tmp_path):
    run = tmp_path / "run"
    manager = CheckpointManager(run)
    model = FlowMo.from_pretrained(saved_model)
    for step in (1, 2):
        manager.save(step, {"step": step}, export=model.save_pretrained)
    cfg = make_cfg(run, tmp_path / "out", "metrics=[psnr]", "continuous=true", "timeout_s=0", "poll_interval_s=0")
    reports = evaluate_continuously(cfg)
    assert [r["step"] for r in reports] == [1, 2]
    assert evaluate_continuously(cfg) == []  # already evaluated: nothing new
    lines = (tmp_path / "out" / "evaluations.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
