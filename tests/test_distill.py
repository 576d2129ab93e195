"""Few-step decoding (stage=distill): evaluation counts, the objective, and the distilled checkpoint."""

import copy
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tokenizer import FlowMo, FlowMoConfig, load_flowmo
from tokenizer.distill import DistillSettings, distill_losses
from tokenizer.sampler import network_evaluations, time_grid
from tokenizer.train import train

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
FAST = ["tokenizer.image_size=16", "tokenizer.code_length=4", "tokenizer.enc_depth=1", "tokenizer.dec_depth=1",
        "train.batch_size=4", "log.images_every=0", "log.val_every=0", "log.every=1", "train.warmup_steps=0",
        "train.ema_every=1", "train.ema_decay=0.5"]


def make_cfg(name, run_dir, *overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("tokenizer_train", overrides=[f"experiment={name}", *FAST, f"run_dir={run_dir}", *overrides])


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return FlowMo(FlowMoConfig(image_size=16, patch_size=4, code_length=4, context_dim=12, lfq_bits=6,
                               enc_width=0.5, dec_width=0.5, enc_depth=1, dec_depth=1, num_heads=3)).eval()


@pytest.fixture
def count_decoder_rows(benchmark_module):
    """rate_distortion.count_decoder_rows: a context manager counting the rows the decoder evaluates."""
    return benchmark_module("rate_distortion").count_decoder_rows


@pytest.mark.parametrize("steps, cfg, interval", [(25, 1.5, (0.17, 1.02)), (25, 1.0, (0.17, 1.02)), (4, 1.5, None),
                                                  (2, 1.0, None), (1, 2.0, (0.17, 1.02))])
def test_decode_evaluations_count_the_decoder_calls(steps, cfg, interval, count_decoder_rows):
    model = tiny_model()
    indices = torch.randint(0, model.config.vocab_size, (3, model.config.num_indices))
    with torch.no_grad(), count_decoder_rows(model) as rows:
        model.decode(indices, steps=steps, cfg=cfg, cfg_interval=interval, generator=torch.Generator().manual_seed(0))
    assert rows[0] == 3 * model.decode_evaluations(steps, cfg, cfg_interval=interval)


def test_the_release_sampler_costs_31_evaluations_per_image():
    # 25 steps plus a guided pass on the 6 steps whose t falls in the release's sigma interval
    assert network_evaluations(time_grid(25, "pow_0.25"), 1.5, (0.17, 1.02)) == 31
    assert network_evaluations(time_grid(25, "pow_0.25"), 1.0, (0.17, 1.02)) == 25


def test_settings_are_checked():
    with pytest.raises(ValueError, match="not both 0"):
        DistillSettings(data_weight=0.0, teacher_weight=0.0)
    with pytest.raises(ValueError, match="positive integer"):
        DistillSettings(steps=0)
    with pytest.raises(ValueError, match="teacher"):
        distill_losses(tiny_model(), torch.zeros(2, 3, 16, 16), DistillSettings(teacher_weight=1.0),
                       torch.nn.functional.mse_loss)


def test_a_student_with_the_teachers_sampler_starts_at_zero_teacher_loss():
    teacher = tiny_model()
    student = copy.deepcopy(teacher)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    settings = DistillSettings(steps=3, data_weight=0.0, teacher_weight=1.0, teacher_steps=3, teacher_cfg=1.0,
                               teacher_schedule="pow_0.25")
    _, terms = distill_losses(student, images, settings, torch.nn.functional.mse_loss, teacher, checkpoint=False)
    assert terms["distill_teacher"].item() < 1e-10
    settings.teacher_steps = 25  # another sampler: a real gap to close
    _, terms = distill_losses(student, images, settings, torch.nn.functional.mse_loss, teacher, checkpoint=False)
    assert terms["distill_teacher"].item() > 1e-4


def test_the_few_step_objective_falls_and_leaves_the_encoder_alone():
    student = tiny_model().train()
    for p in student.encoder.parameters():
        p.requires_grad_(False)
    encoder_before = {k: v.clone() for k, v in student.encoder.state_dict().items()}
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=3e-3)
    settings = DistillSettings(steps=1)
    losses = []
    for step in range(25):
        loss, _ = distill_losses(student, images, settings, torch.nn.functional.mse_loss, checkpoint=False,
                                 generator=torch.Generator().manual_seed(step % 2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3]), losses
    for k, v in student.encoder.state_dict().items():
        torch.testing.assert_close(v, encoder_before[k], rtol=0, atol=0)


@pytest.mark.slow
def test_distilled_checkpoint_decodes_in_few_steps_with_the_teachers_tokens(tmp_path, count_decoder_rows):
    train(make_cfg("digits", tmp_path / "teacher", "train.max_steps=2", "checkpoint.every=2"))
    with pytest.raises(ValueError, match="init_from"):
        train(make_cfg("digits_distill", tmp_path / "missing", "init_from=null"))
    out = train(make_cfg("digits_distill", tmp_path / "student", f"init_from={tmp_path / 'teacher'}",
                         "train.max_steps=2", "checkpoint.every=2", "distill.steps=2", "distill.teacher_weight=1.0",
                         "distill.teacher_steps=3"))
    assert len(out["losses"]) == 2 and all(torch.isfinite(torch.tensor(out["losses"])))
    teacher, student = load_flowmo(tmp_path / "teacher"), load_flowmo(tmp_path / "student")

    # the few-step mode is the saved default: 2 decoder evaluations per image, no guidance pass
    assert (student.config.decode.steps, student.config.decode.cfg) == (2, 1.0)
    assert student.decode_evaluations() == 2 < teacher.decode_evaluations(25, 1.5)
    indices = torch.randint(0, student.config.vocab_size, (5, student.config.num_indices))  # as a generator emits
    with torch.no_grad(), count_decoder_rows(student) as rows:
        images = student.decode(indices, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, 3, 16, 16) and rows[0] == 5 * 2

    # the token interface is unchanged: same encoder, same indices
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(student.tokenize(real), teacher.tokenize(real))

    # save / load round trip keeps weights and the few-step default
    student.save_pretrained(tmp_path / "export")
    again = load_flowmo(tmp_path / "export")
    assert again.config.decode == student.config.decode
    noise = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.decode(indices, noise=noise), student.decode(indices, noise=noise))


@pytest.mark.parametrize("name, preset", [("imagenet_lo_distill", "flowmo_lo"), ("imagenet_hi_distill", "flowmo_hi")])
def test_full_scale_distill_experiments_start_from_the_released_checkpoint(name, preset):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("tokenizer_train", overrides=[f"experiment={name}", "run_dir=unused",
                                                    "init_from=/models/flowmo.pth"])
    assert FlowMoConfig(**cfg.tokenizer) == FlowMoConfig.preset(preset)
    assert (cfg.stage, cfg.init_preset) == ("distill", preset)
    settings = DistillSettings(**cfg.distill)
    assert settings.steps <= 4 and (settings.teacher_steps, settings.teacher_cfg) == (25, 1.5)
    assert cfg.train.batch_size * cfg.train.grad_accum * 8 == 64


def test_speed_benchmark_times_each_sampler_and_counts_its_evaluations(benchmark_module):
    import argparse

    speed = benchmark_module("tokenizer_speed")
    assert speed.parse_mode("25:1.5") == (25, 1.5) and speed.parse_mode("default") == (None, None)
    with pytest.raises(argparse.ArgumentTypeError, match="STEPS:CFG"):
        speed.parse_mode("fast")
    model = tiny_model()
    rows = speed.decode_rows(model, torch.rand(2, 3, 16, 16) * 2 - 1, [(3, 1.5), (None, None)], repeats=1)
    assert [r["evaluations"] for r in rows] == [model.decode_evaluations(3, 1.5), model.decode_evaluations()]
    assert rows[1]["steps"] == model.config.decode.steps and all(r["seconds"] > 0 for r in rows)
