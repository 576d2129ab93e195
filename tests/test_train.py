"""Tokenizer training loop: loss falls, exact resume, NaN policy, encoder freezing, Stage 1B."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import tokenizer.train as train_module
from runkit.checkpoint import CheckpointManager
from tokenizer.loading import load_flowmo
from runkit.training import TrainingDiverged
from tokenizer.train import train, unused_parameter_names

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
# A smaller digits model at 16 px, so each step takes milliseconds.
FAST = ["experiment=digits", "tokenizer.image_size=16", "tokenizer.code_length=4", "tokenizer.enc_depth=1",
        "tokenizer.dec_depth=1", "train.batch_size=4", "log.images_every=0", "log.val_every=0", "log.every=1",
        "train.warmup_steps=0", "train.ema_every=2", "train.ema_decay=0.9", "train.max_nan_steps=3"]


def make_cfg(run_dir, *overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("tokenizer_train", overrides=[*FAST, f"run_dir={run_dir}", *overrides])


def test_loss_decreases_and_run_dir_is_complete(tmp_path):
    cfg = make_cfg(tmp_path, "train.max_steps=30", "train.batch_size=8", "checkpoint.every=30",
                   "log.images_every=30", "log.val_every=30", "log.num_val_images=4", "log.decode_steps=2")
    out = train(cfg)
    losses = out["losses"]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "images" / "step_00000030.png").is_file()
    assert any((tmp_path / "tb").iterdir())
    assert "psnr" in out["val"]
    model = load_flowmo(tmp_path)  # the EMA export is loadable as a tokenizer
    assert model.config.image_size == 16


def test_block_norms_stay_at_their_initial_values(tmp_path):
    out = train(make_cfg(tmp_path, "train.max_steps=3", "checkpoint.every=3"))
    state = CheckpointManager.load_training_state(out["checkpoint"])
    from tokenizer import FlowMo, FlowMoConfig

    model = FlowMo(FlowMoConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    norms = train_module.weight_norms(train_module.block_linear_weights(model))
    torch.testing.assert_close(norms, state["init_norms"], rtol=1e-5, atol=1e-6)


def test_resume_after_crash_is_exact(tmp_path, monkeypatch):
    steps = ["train.max_steps=6", "checkpoint.every=3", "train.freeze_encoder_after=4"]
    reference = train(make_cfg(tmp_path / "a", *steps))["losses"]

    real = train_module.stage1a_losses
    calls = {"n": 0}

    def crash_on_fifth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "stage1a_losses", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg(tmp_path / "b", *steps))
    monkeypatch.setattr(train_module, "stage1a_losses", real)
    resumed = train(make_cfg(tmp_path / "b", *steps))["losses"]
    assert len(resumed) == 6  # steps 1..3 from the step-3 checkpoint, 4..6 trained again
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(reference), rtol=0, atol=1e-6)
    a, b = (CheckpointManager.load_training_state(p / "checkpoints" / "step_00000006") for p in
            (tmp_path / "a", tmp_path / "b"))
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=0, atol=1e-6)
    assert a["encoder_frozen"] and b["encoder_frozen"]


def test_encoder_frozen_after_configured_step(tmp_path):
    out = train(make_cfg(tmp_path, "train.max_steps=4", "checkpoint.every=2", "checkpoint.keep_last=2",
                         "train.freeze_encoder_after=2"))
    at2, at4 = (CheckpointManager.load_training_state(Path(out["run_dir"]) / "checkpoints" / f"step_0000000{s}")
                for s in (2, 4))
    enc = [k for k in at2["model"] if k.startswith("encoder.img_in")]
    dec = [k for k in at2["model"] if k.startswith("decoder.img_in")]
    assert all(torch.equal(at2["model"][k], at4["model"][k]) for k in enc)
    assert not all(torch.equal(at2["model"][k], at4["model"][k]) for k in dec)


def test_nan_steps_are_skipped_then_the_run_stops(tmp_path, monkeypatch):
    real = train_module.stage1a_losses
    calls = {"n": 0}

    def nan_on_second(*args, **kwargs):
        calls["n"] += 1
        total, terms = real(*args, **kwargs)
        if calls["n"] == 2:
            total = total * float("nan")
        return total, terms

    monkeypatch.setattr(train_module, "stage1a_losses", nan_on_second)
    losses = train(make_cfg(tmp_path / "one", "train.max_steps=3", "checkpoint.every=3"))["losses"]
    assert torch.isfinite(torch.tensor(losses[0])) and torch.isnan(torch.tensor(losses[1]))
    assert torch.isfinite(torch.tensor(losses[2]))

    def always_nan(*args, **kwargs):
        total, terms = real(*args, **kwargs)
        return total * float("inf"), terms

    monkeypatch.setattr(train_module, "stage1a_losses", always_nan)
    with pytest.raises(TrainingDiverged, match="max_nan_steps=3"):
        train(make_cfg(tmp_path / "diverge", "train.max_steps=10", "checkpoint.every=10"))
    latest = CheckpointManager(tmp_path / "diverge").latest()
    assert latest is not None and latest.name == "step_00000003"
    state = CheckpointManager.load_training_state(latest)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_unused_parameters_are_the_documented_ones(tmp_path):
    from tokenizer import FlowMo, FlowMoConfig

    model = FlowMo(FlowMoConfig.preset("tiny"))
    unused = unused_parameter_names(model)
    assert any(n.startswith("decoder.final_layer_txt") for n in unused)
    assert any(n.startswith("encoder.final_layer_img") for n in unused)
    # the last decoder block's code stream only feeds the unused code readout
    assert any(n.startswith("decoder.double_blocks.1.txt_mlp") for n in unused)
    assert not any(n.startswith(("decoder.final_layer_img", "decoder.img_in", "decoder.double_blocks.0.",
                                 "decoder.double_blocks.1.img_")) for n in unused)


@pytest.mark.slow
def test_stage1b_from_stage1a_run(tmp_path):
    train(make_cfg(tmp_path / "1a", "train.max_steps=2", "checkpoint.every=2"))
    with pytest.raises(ValueError, match="init_from"):
        train(make_cfg(tmp_path / "1b_missing", "stage=1b"))
    out = train(make_cfg(tmp_path / "1b", "stage=1b", f"init_from={tmp_path / '1a'}", "train.max_steps=2",
                         "checkpoint.every=2", "loss.sample_steps=2"))
    assert len(out["losses"]) == 2 and all(torch.isfinite(torch.tensor(out["losses"])))
    start = load_flowmo(tmp_path / "1a").state_dict()
    state = CheckpointManager.load_training_state(out["checkpoint"])
    assert state["stage"] == "1b" and state["encoder_frozen"]
    for name in start:
        if name.startswith("encoder."):
            torch.testing.assert_close(state["model"][name], start[name])
    with pytest.raises(ValueError, match="stage"):  # a 1A run dir cannot be resumed as 1B
        train(make_cfg(tmp_path / "1a", "stage=1b", f"init_from={tmp_path / '1a'}", "train.max_steps=3"))


@pytest.mark.parametrize("name, preset, stage, lr, steps", [
    ("imagenet_lo_stage1a", "flowmo_lo", "1a", 1e-4, 1_300_000), ("imagenet_hi_stage1a", "flowmo_hi", "1a", 1e-4, 800_000),
    ("imagenet_lo_stage1b", "flowmo_lo", "1b", 5e-5, 25_000), ("imagenet_hi_stage1b", "flowmo_hi", "1b", 5e-5, 25_000)])
def test_full_scale_experiments_match_the_paper(name, preset, stage, lr, steps):
    from tokenizer import FlowMoConfig

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("tokenizer_train", overrides=[f"experiment={name}", "run_dir=unused"])
    assert FlowMoConfig(**cfg.tokenizer) == FlowMoConfig.preset(preset)
    assert (cfg.stage, cfg.train.lr, cfg.train.max_steps) == (stage, lr, steps)
    assert cfg.train.batch_size * cfg.train.grad_accum * 8 == (128 if stage == "1a" else 64)
    assert cfg.train.ema_decay == 0.9999 and cfg.train.ema_every == 10 and list(cfg.train.betas) == [0.9, 0.95]
    if stage == "1b":
        assert (cfg.loss.sample_perceptual, cfg.loss.sample_loss_weight, cfg.loss.sample_steps) == ("resnet50", 0.01, 8)
    else:
        assert (cfg.loss.perceptual, cfg.loss.perceptual_weight, cfg.train.freeze_encoder_after) == ("lpips", 0.1, 200_000)


def test_a_run_on_the_photo_corpus_saves_its_training_data_beside_the_weights(tmp_path):
    import json

    from skimage import data
    from PIL import Image

    corpus = tmp_path / "corpus"
    for split, names in {"train": ("astronaut", "coffee"), "val": ("rocket",)}.items():
        (corpus / split / "pkg").mkdir(parents=True)
        for name in names:
            Image.fromarray(getattr(data, name)()).save(corpus / split / "pkg" / f"{name}.png")
    cfg = make_cfg(tmp_path / "run", "data=photo_corpus", f"data.root={corpus}", "data.crops_per_photo=2",
                   "train.max_steps=2", "checkpoint.every=2")
    out = train(cfg)
    record = json.loads((Path(out["checkpoint"]) / "training_data.json").read_text())
    assert record["split"] == "train" and record["settings"]["crops per epoch"] == 4
    assert sorted(Path(photo["file"]).name for photo in record["photos"]) == ["astronaut.png", "coffee.png"]
    assert load_flowmo(out["checkpoint"]).config.image_size == 16  # the extra file leaves loading alone
