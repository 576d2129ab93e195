"""Precision and compile choices (runkit.acceleration), the training run's summary.json, and compiled
training: equal outputs, no recompilation after the warm-up, clean weights, resume across modes."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from runkit import acceleration
from runkit.acceleration import Choice, choose_compile, choose_precision, compile_blocks, describe
from runkit.checkpoint import CheckpointManager
from tokenizer import FlowMo, FlowMoConfig

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
FAST = ["experiment=digits", "tokenizer.image_size=16", "tokenizer.code_length=4", "tokenizer.enc_depth=1",
        "tokenizer.dec_depth=1", "train.batch_size=4", "log.images_every=0", "log.val_every=0", "log.every=1",
        "train.warmup_steps=0", "train.ema_every=2", "train.ema_decay=0.9"]


def make_cfg(run_dir, *overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("tokenizer_train", overrides=[*FAST, f"run_dir={run_dir}", *overrides])


# ---------------------------------------------------------------------------- precision
@pytest.mark.parametrize("native, width, expected", [
    ("AMX", 384, "bf16"), ("AVX512-BF16", 256, "bf16"), ("AMX", 96, "no"), (None, 1152, "no"), ("AMX", None, "no")])
def test_auto_precision_on_a_cpu_follows_the_measured_rule(monkeypatch, native, width, expected):
    monkeypatch.setattr(acceleration, "cpu_native_bf16", lambda: native)
    choice = choose_precision("auto", "cpu", width)
    assert choice.value == expected
    if native and expected == "no":
        assert f"< {acceleration.CPU_BF16_MIN_WIDTH}" in choice.reason
    if native is None:
        assert "without native bf16" in choice.reason


def test_forced_precision_passes_through_and_a_bad_value_is_named():
    assert choose_precision("no", "cpu", 4096).value == "no"
    assert choose_precision("bf16", "cpu", 8).value == "bf16"
    assert "forced" in choose_precision("fp16", "cpu").reason
    with pytest.raises(ValueError, match="mixed_precision='bfloat16'"):
        choose_precision("bfloat16", "cpu")


def test_cpu_flags_are_read_from_proc_cpuinfo():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    native = acceleration.cpu_native_bf16()
    if "amx_bf16" in flags:
        assert native == "AMX"
    elif "avx512_bf16" in flags:
        assert native == "AVX512-BF16"
    else:
        assert native is None


# ---------------------------------------------------------------------------- compile choice
def test_compile_choice_auto_needs_a_compiler_and_a_long_enough_job(monkeypatch):
    monkeypatch.setattr(acceleration, "compiler_problem", lambda device: None)
    assert choose_compile("auto", "cpu", 10_000).value is True
    short = choose_compile("auto", "cpu", 40, unit="steps to train")
    assert short.value is False and "40 steps to train" in short.reason
    assert choose_compile(False, "cpu", 10_000) == Choice(False, "forced by compile=false")
    no_gain = choose_compile("auto", "cpu", 10_000, cpu_gain=False)
    assert no_gain.value is False and "measured no faster compiled on a CPU" in no_gain.reason
    assert choose_compile(True, "cpu", 10_000, cpu_gain=False).value is True  # forcing still compiles
    monkeypatch.setattr(acceleration, "compiler_problem", lambda device: "no C++ compiler on PATH")
    assert choose_compile("auto", "cpu", 10_000) == Choice(False, "no C++ compiler on PATH")
    with pytest.raises(ValueError, match="compile=true, but torch.compile cannot run here: no C\\+\\+ compiler"):
        choose_compile(True, "cpu", 10_000)
    with pytest.raises(ValueError, match="compile='yes'; choose auto, true or false"):
        choose_compile("yes", "cpu", 1)


def test_first_line_says_what_was_chosen_and_why():
    line = describe(Choice(True, "inductor C++ on CPU"), Choice("bf16", "CPU has AMX, model 384 wide"))
    assert line == "compile: on (inductor C++ on CPU); precision: bf16 (CPU has AMX, model 384 wide)"
    assert describe(Choice(False, "x"), Choice("no", "y")).startswith("compile: off (x); precision: fp32 (y)")


def test_inference_choice_reads_the_widest_model(monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_native_bf16", lambda: "AMX")
    narrow, wide = FlowMo(FlowMoConfig.preset("tiny")), FlowMo(FlowMoConfig.preset("tiny"))
    narrow.config.enc_width = narrow.config.dec_width = 0.5  # 96 wide
    _, precision = acceleration.inference_choices([narrow], "auto", "auto", "cpu", 1)
    assert precision.value == "no"
    _, precision = acceleration.inference_choices([narrow, wide], "auto", "auto", "cpu", 1)
    assert precision.value == "bf16"  # tiny is 384 wide


# ---------------------------------------------------------------------------- compiled models
def test_compiled_blocks_keep_parameter_names_and_match_eager():
    torch.manual_seed(0)
    config = FlowMoConfig.preset("tiny")
    eager = FlowMo(config).eval()
    compiled = FlowMo(config).eval()
    compiled.load_state_dict(eager.state_dict())
    assert compile_blocks(compiled) == config.enc_depth + config.dec_depth
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no "_orig_mod." anywhere
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        code = eager.quantize(eager.encode(images)).code
        torch.testing.assert_close(compiled.encode(images), eager.encode(images), atol=1e-4, rtol=1e-4)
        for branch in (code, None):
            torch.testing.assert_close(compiled.velocity(images, branch, t), eager.velocity(images, branch, t),
                                       atol=1e-4, rtol=1e-4)


def test_ar_sampling_stays_eager_and_says_why():
    from generator import ARTransformer, GeneratorConfig

    config = GeneratorConfig(model="ar", seq_len=4, vocab_size=8, num_classes=2, width=32, depth=1, num_heads=2)
    notes = acceleration.compile_for_inference([ARTransformer(config)])
    assert notes and "KV-cache" in notes[0]


# ---------------------------------------------------------------------------- training runs
def test_eager_run_writes_its_speed_summary(tmp_path, capsys):
    from tokenizer.train import train

    out = train(make_cfg(tmp_path, "train.max_steps=6", "checkpoint.every=6"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == out["speed"]
    assert summary["steps"] == 6 and summary["warmup_steps"] == 3 and summary["steady_steps"] == 3
    assert summary["compile"] is False and "6 steps to train" in summary["compile_reason"]
    assert summary["mixed_precision"] == "no" and summary["steps_per_s"] > 0
    assert summary["device"].startswith("CPU") and summary["last_step"] == 6
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("compile: off (6 steps to train (< 500")


@pytest.mark.slow
def test_compiled_training_does_not_recompile_and_resumes_eagerly(tmp_path):
    """The compiled run: the losses of the eager run (only the blocks are compiled; the loss's random
    draws stay eager, so both see the same noise), no graph built after the warm-up, checkpoints
    without compile wrappers; then the same run continues eagerly."""
    from tokenizer.train import train

    steps = ["train.max_steps=8", "checkpoint.every=8", "train.freeze_encoder_after=null"]
    eager = train(make_cfg(tmp_path / "eager", *steps, "train.compile=false"))
    compiled = train(make_cfg(tmp_path / "compiled", *steps, "train.compile=true"))
    speed = compiled["speed"]
    assert speed["compile"] is True and speed["compiled_graphs"] > 0
    assert speed["recompiles_after_warmup"] == 0
    torch.testing.assert_close(torch.tensor(compiled["losses"]), torch.tensor(eager["losses"]), rtol=1e-3, atol=1e-4)
    state = CheckpointManager.load_training_state(compiled["checkpoint"])
    assert not [k for k in state["model"] if "_orig_mod" in k]
    resumed = train(make_cfg(tmp_path / "compiled", "train.max_steps=10", "checkpoint.every=10",
                             "train.freeze_encoder_after=null", "train.compile=false", "resume_force=true"))
    assert resumed["step"] == 10 and resumed["speed"]["compile"] is False
    assert resumed["speed"]["first_step"] == 8
