"""FlowMo model: released-code reference outputs, checkpoint layout, round trips, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tokenizer import FlowMo, FlowMoConfig, load_flowmo
from tokenizer import quantizer as lfq
from tokenizer.official import extract_state_dict, map_official_name
from tokenizer.sampler import sigma_to_t, time_grid

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-4


def manifest(name: str) -> dict:
    return json.loads((FIXTURES / f"flowmo_{name}.json").read_text())


def reference_state_dict() -> dict[str, torch.Tensor]:
    """The seed rule of official_state_dict/README.md: sorted names, one generator, randn * 0.05."""
    shapes = manifest("tiny")["state_dict"]
    g = torch.Generator().manual_seed(1234)
    return {name: torch.randn(shapes[name]["shape"], generator=g) * 0.05 for name in sorted(shapes)}


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURES / "tiny_reference_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def tiny_model():
    return FlowMo.from_official(reference_state_dict(), FlowMoConfig.preset("tiny")).eval()


# ---------------------------------------------------------------- released-code reference outputs
def test_encoder_output_matches_reference(tiny_model, reference):
    with torch.no_grad():
        code = tiny_model.encode(reference["images"])
    torch.testing.assert_close(code, reference["code_prequant"], atol=TOL, rtol=0)


def test_quantized_code_and_indices_match_reference(tiny_model, reference):
    quantized = tiny_model.quantize(reference["code_prequant"])
    torch.testing.assert_close(quantized.code, reference["code_quant"], atol=TOL, rtol=0)
    assert quantized.indices.dtype == torch.int64
    assert torch.equal(quantized.indices, reference["indices"])


def test_decoder_code_input_and_velocity_match_reference(tiny_model, reference):
    code_in = FlowMo.decoder_code_input(reference["code_quant"])
    torch.testing.assert_close(code_in, reference["decoder_code_input"], atol=0, rtol=0)
    with torch.no_grad():
        v = tiny_model.velocity(reference["noised"], reference["code_quant"], reference["t"])
    torch.testing.assert_close(v, reference["velocity"], atol=TOL, rtol=0)


def test_time_grid_and_cfg_interval_match_reference(reference):
    torch.testing.assert_close(time_grid(reference["sample_steps"], "pow_0.25"), reference["sample_timesteps"])
    lo, hi = reference["sample_cfg_interval_t"]
    assert sigma_to_t(0.17) == pytest.approx(lo) and sigma_to_t(1.02) == pytest.approx(hi)


def test_four_step_cfg_sample_matches_reference(tiny_model, reference):
    with torch.no_grad():
        sample = tiny_model.decode(reference["indices"], steps=reference["sample_steps"], cfg=reference["sample_cfg"],
                                   schedule="pow_0.25", cfg_interval=(0.17, 1.02), noise=reference["sample_noise"])
    torch.testing.assert_close(sample, reference["sample"], atol=TOL, rtol=0)


def test_cfg_changes_the_sample(tiny_model, reference):
    """Guard against a silently disabled guidance path: cfg 1.5 vs 1.0 must differ."""
    with torch.no_grad():
        unguided = tiny_model.decode(reference["indices"], steps=4, cfg=1.0, noise=reference["sample_noise"])
    assert (unguided - reference["sample"]).abs().max() > 1e-3


# ---------------------------------------------------------------- released checkpoint layout
@pytest.mark.parametrize("preset", ["flowmo_lo", "flowmo_hi", "tiny"])
def test_parameter_names_shapes_and_counts_equal_manifest(preset):
    info = manifest(preset.removeprefix("flowmo_"))
    with torch.device("meta"):
        model = FlowMo(FlowMoConfig.preset(preset))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    released = {k: v["shape"] for k, v in info["state_dict"].items()}
    assert ours == released
    assert sum(p.numel() for p in model.parameters()) == info["info"]["params_total"]
    assert sum(p.numel() for p in model.encoder.parameters()) == info["info"]["params_encoder"]
    assert sum(p.numel() for p in model.decoder.parameters()) == info["info"]["params_decoder"]
    assert model.config.rope_axes(model.config.enc_hidden) == info["info"]["encoder_axes_dim"]
    assert model.config.rope_axes(model.config.dec_hidden) == info["info"]["decoder_axes_dim"]


def test_released_pth_layout_loads_ema_by_default(tmp_path, tiny_model):
    ema = reference_state_dict()
    raw = {k: v + 1.0 for k, v in ema.items()}
    path = tmp_path / "flowmo_tiny.pth"
    torch.save({"total_steps": 10, "model_ema_state_dict": ema, "model_state_dict": raw}, path)
    loaded = FlowMo.from_official(path, "tiny")
    torch.testing.assert_close(loaded.state_dict(), tiny_model.state_dict())
    loaded_raw = FlowMo.from_official(path, "tiny", weights="raw")
    key = "decoder.img_in.weight"
    torch.testing.assert_close(loaded_raw.state_dict()[key], raw[key])
    assert isinstance(load_flowmo(path, config="tiny"), FlowMo)


def test_wrapper_prefixes_are_stripped():
    assert map_official_name("module.decoder.img_in.weight") == "decoder.img_in.weight"
    assert map_official_name("_orig_mod.encoder.txt_in.bias") == "encoder.txt_in.bias"
    state = extract_state_dict({"module.a": torch.zeros(1)})
    assert list(state) == ["a"]


def test_missing_unexpected_and_misshaped_keys_are_named():
    state = reference_state_dict()
    del state["decoder.img_in.bias"]
    state["decoder.extra.weight"] = torch.zeros(1)
    state["encoder.txt_in.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError) as err:
        FlowMo.from_official(state, "tiny")
    message = str(err.value)
    assert "decoder.img_in.bias" in message and "decoder.extra.weight" in message
    assert "encoder.txt_in.weight" in message and "(3, 3)" in message


def test_wrong_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown FlowMo preset"):
        FlowMoConfig.preset("flowmo_xl")
    with pytest.raises(FileNotFoundError, match="not found"):
        FlowMo.from_official("/nonexistent/flowmo_lo.pth", "flowmo_lo")
    with pytest.raises(KeyError, match="model_state_dict"):
        FlowMo.from_official({"model_ema_state_dict": {}, "total_steps": 0}, "tiny", weights="raw")


# ---------------------------------------------------------------- quantizer round trips and rates
@pytest.mark.parametrize("preset", ["flowmo_lo", "flowmo_hi"])
def test_indices_round_trip_to_quantized_code(preset):
    config = FlowMoConfig.preset(preset)
    code = torch.randn(3, config.code_length, config.context_dim, generator=torch.Generator().manual_seed(0))
    quantized = lfq.sign_quantize(code)
    indices = lfq.code_to_indices(quantized, config.lfq_bits)
    assert indices.shape == (3, config.num_indices)
    assert int(indices.max()) < config.vocab_size
    assert torch.equal(lfq.indices_to_code(indices, config.lfq_bits, config.context_dim), quantized)


def test_subtoken_grouping_is_strided_and_little_endian():
    """Lo: sub-token j of a token takes channels j, j+2, ...; bit i is the i-th of those channels."""
    code = -torch.ones(1, 1, 18)
    code[0, 0, 0] = 1.0  # bit 0 of sub-token 0
    code[0, 0, 3] = 1.0  # channel 3 = 1*2 + 1 -> bit 1 of sub-token 1
    assert lfq.code_to_indices(code, 9).tolist() == [[1, 2]]


def test_bits_per_pixel_of_released_configs():
    assert FlowMoConfig.preset("flowmo_lo").bits_per_pixel == pytest.approx(0.0703, abs=5e-5)
    assert FlowMoConfig.preset("flowmo_hi").bits_per_pixel == pytest.approx(0.21875)
    assert FlowMoConfig.preset("flowmo_lo").num_indices == 512
    assert FlowMoConfig.preset("flowmo_hi").num_indices == 1024


def test_straight_through_gradient_reaches_encoder_output(tiny_model, reference):
    code = reference["code_prequant"].clone().requires_grad_(True)
    quantized = tiny_model.quantize(code)
    (quantized.code * torch.arange(18.0)).sum().backward()
    torch.testing.assert_close(code.grad, torch.arange(18.0).expand_as(code))


# ---------------------------------------------------------------- decoding behaviour
def test_decode_is_reproducible_with_a_generator_and_clipped(tiny_model, reference):
    def run(seed):
        return tiny_model.decode(reference["indices"], steps=2, generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


def test_linear_schedule_and_bad_schedules():
    torch.testing.assert_close(time_grid(4, "linear"), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    for bad in ("cosine", "pow_-1", "pow_x"):
        with pytest.raises(ValueError, match="schedule"):
            time_grid(4, bad)
    with pytest.raises(ValueError, match="steps"):
        time_grid(0)


def test_wrong_image_shape_and_bad_indices_are_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="32x32"):
        tiny_model.encode(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        tiny_model.encode(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="indices per image"):
        tiny_model.indices_to_code(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        tiny_model.indices_to_code(torch.full((1, 32), 512, dtype=torch.long))


@pytest.mark.parametrize("field,value,match", [
    ("patch_size", 5, "multiple of patch_size"),
    ("lfq_bits", 7, "multiple of lfq_bits"),
    ("enc_width", 1, "RoPE axis dims"),
    ("dec_depth", 0, "positive integer"),
])
def test_invalid_configs_are_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        FlowMoConfig(**{**FlowMoConfig.preset("tiny").to_dict(), field: value})


# ---------------------------------------------------------------- persistence and options
def test_save_and_from_pretrained_round_trip(tmp_path, tiny_model, reference):
    tiny_model.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = FlowMo.from_pretrained(tmp_path / "tok")
    assert loaded.config == tiny_model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(reference["images"]), tiny_model.encode(reference["images"]))
    assert isinstance(load_flowmo(tmp_path / "tok"), FlowMo)


def test_from_pretrained_missing_files_and_stale_format(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="config.json"):
        FlowMo.from_pretrained(tmp_path / "nothing")
    tiny_model.save_pretrained(tmp_path / "tok")
    meta = json.loads((tmp_path / "tok" / "config.json").read_text())
    meta["format_version"] = 0
    (tmp_path / "tok" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version"):
        FlowMo.from_pretrained(tmp_path / "tok")


def test_gradient_checkpointing_gives_identical_gradients(reference):
    model = FlowMo.from_official(reference_state_dict(), "tiny")

    def grads(checkpointing):
        model.zero_grad()
        model.set_gradient_checkpointing(checkpointing)
        model.velocity(reference["noised"], reference["code_quant"], reference["t"]).square().mean().backward()
        return [p.grad.clone() for p in model.decoder.parameters() if p.grad is not None]

    for a, b in zip(grads(False), grads(True)):
        torch.testing.assert_close(a, b)


def test_bf16_autocast_stays_close_to_float32(tiny_model, reference):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        v = tiny_model.velocity(reference["noised"], reference["code_quant"], reference["t"])
    assert (v.float() - reference["velocity"]).abs().mean() < 0.05 * reference["velocity"].abs().mean() + 1e-3


def test_config_from_dict_names_unknown_fields():
    data = {**FlowMoConfig.preset("tiny").to_dict(), "patch_szie": 4}
    with pytest.raises(ValueError, match=r"unknown FlowMoConfig field\(s\): \['patch_szie'\]"):
        FlowMoConfig.from_dict(data)
    assert FlowMoConfig.from_dict(FlowMoConfig.preset("tiny").to_dict()) == FlowMoConfig.preset("tiny")


def test_decode_defaults_are_saved_with_the_weights_and_used(tmp_path, tiny_model):
    config = FlowMoConfig.from_dict({**tiny_model.config.to_dict(), "decode": {"steps": 3, "cfg": 1.0}})
    assert config.architecture_hash() == tiny_model.config.architecture_hash()  # sampler settings are not weights
    model = FlowMo(config)
    model.load_state_dict(tiny_model.state_dict())
    model.save_pretrained(tmp_path)
    loaded = FlowMo.from_pretrained(tmp_path).eval()
    assert loaded.config.decode.steps == 3 and loaded.config.decode.cfg == 1.0
    assert loaded.config.decode.cfg_interval == (0.17, 1.02)

    calls = []
    original = loaded.velocity_from_input
    loaded.velocity_from_input = lambda *args: calls.append(args[0].shape[0]) or original(*args)
    indices = torch.zeros(2, loaded.config.num_indices, dtype=torch.long)
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        default = loaded.decode(indices, noise=noise)
        assert calls == [2, 2, 2]  # 3 steps, no guidance rows at cfg 1.0
        explicit = loaded.decode(indices, steps=3, cfg=1.0, noise=noise)
        torch.testing.assert_close(default, explicit)
        calls.clear()
        loaded.decode(indices, steps=2, cfg=1.5, cfg_interval=None, noise=noise)
    assert calls == [4, 4]  # an explicit argument wins: guided rows doubled at every step
    assert loaded.decode_settings(steps=5)["steps"] == 5 and loaded.decode_settings()["steps"] == 3
    with pytest.raises(ValueError, match="steps"):
        FlowMoConfig.from_dict({**tiny_model.config.to_dict(), "decode": {"steps": 0}})


@pytest.mark.parametrize("decode, match", [
    ({"cfg": -1.0}, "cfg"), ({"schedule": "pow0.25"}, "schedule"), ({"cfg_interval": [1.0, 0.5]}, "low <= high"),
    ({"cfg_interval": "default"}, "cfg_interval"), ({"bogus": 1}, "unknown"),
])
def test_bad_decode_defaults_are_rejected_when_the_config_is_built(decode, match):
    with pytest.raises(ValueError, match=match):
        FlowMoConfig.from_dict({**FlowMoConfig.preset("tiny").to_dict(), "decode": decode})
    assert FlowMoConfig.from_dict({**FlowMoConfig.preset("tiny").to_dict(), "decode": None}).decode.steps == 25


def test_yaml_presets_carry_the_released_decoder_defaults():
    import yaml

    for name in ("flowmo_lo", "flowmo_hi", "tiny"):
        data = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tokenizer" / f"{name}.yaml").read_text())
        config = FlowMoConfig.from_dict(data)
        assert config.decode == FlowMoConfig.preset(name).decode
        assert (config.decode.steps, config.decode.cfg, config.decode.cfg_interval) == (25, 1.5, (0.17, 1.02))
