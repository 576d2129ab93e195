"""GeneratorConfig.sampling: the sampling defaults saved with a generator and used by generate()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from generator import GeneratorConfig, MaskGIT
from generator.ar import ARTransformer
from generator.base import GeneratorModel
from generator.config import SamplingDefaults

REPO = Path(__file__).resolve().parents[1]
TINY = dict(seq_len=8, vocab_size=16, num_classes=3, width=32, depth=1, num_heads=2)
CLASSES = torch.tensor([0, 1, 2, 1])


def rng(seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(len(CLASSES))]


def maskgit(sampling=None) -> MaskGIT:
    torch.manual_seed(0)
    return MaskGIT(GeneratorConfig(model="maskgit", sampling=sampling, **TINY)).eval()


def ar(sampling=None) -> ARTransformer:
    torch.manual_seed(0)
    return ARTransformer(GeneratorConfig(model="ar", sampling=sampling, **TINY)).eval()


def test_maskgit_generate_uses_the_saved_defaults_when_arguments_are_none():
    tuned = SamplingDefaults(num_steps=3, cfg_scale=2.0, temperature=0.7, guidance_schedule="linear",
                             choice_temperature=1.0)
    model = maskgit(tuned)
    steps = []
    implicit = model.generate(CLASSES, generator=rng(), progress=lambda step, total: steps.append(total))
    assert set(steps) == {3}  # num_steps from config.sampling
    explicit = model.generate(CLASSES, num_steps=3, cfg_scale=2.0, temperature=0.7, generator=rng(),
                              guidance_schedule="linear", choice_temperature=1.0)
    assert torch.equal(implicit, explicit)
    # The same weights with the class defaults sample differently: the saved settings matter.
    plain = maskgit()
    plain.load_state_dict(model.state_dict())
    assert not torch.equal(plain.generate(CLASSES, generator=rng()), implicit)
    # An explicit argument overrides the saved default.
    steps.clear()
    model.generate(CLASSES, num_steps=2, generator=rng(), progress=lambda step, total: steps.append(total))
    assert set(steps) == {2}
    assert model.sampling_settings(temperature=0.1) == {**vars(tuned), "temperature": 0.1}
    with pytest.raises(ValueError, match="unknown sampling option"):
        model.sampling_settings(top_q=0.5)


def test_ar_generate_uses_saved_top_k_and_can_switch_it_off():
    greedy = ar(SamplingDefaults(top_k=1))  # top-1: the argmax whatever the random stream
    first = greedy.generate(CLASSES, generator=rng(0))
    assert torch.equal(greedy.generate(CLASSES, generator=rng(100)), first)
    assert torch.equal(greedy.generate(CLASSES, generator=rng(100), top_k=1, temperature=1.0), first)
    unfiltered = [greedy.generate(CLASSES, generator=rng(s), top_k=0) for s in (0, 100)]  # top_k=0: filter off
    assert not torch.equal(*unfiltered)
    plain = ar()
    plain.load_state_dict(greedy.state_dict())
    assert torch.equal(plain.generate(CLASSES, generator=rng(0)), unfiltered[0])


@pytest.mark.parametrize("build", [maskgit, ar])
def test_sampling_defaults_survive_save_and_load(tmp_path, build):
    tuned = SamplingDefaults(num_steps=4, cfg_scale=1.5, temperature=0.9, guidance_schedule="cosine",
                             choice_temperature=2.0, top_k=5, top_p=0.9)
    model = build(tuned)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["config"]["sampling"]
    assert saved == vars(tuned)
    loaded = GeneratorModel.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and loaded.config.sampling == tuned
    assert isinstance(loaded.config.sampling, SamplingDefaults)
    assert torch.equal(loaded.generate(CLASSES, generator=rng()), model.generate(CLASSES, generator=rng()))


@pytest.mark.parametrize("field, value, message", [
    ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
    ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
    ("top_k", 0, "top_k must be a positive integer"),
    ("num_steps", 0, "num_steps must be a positive integer"),
    ("temperature", -1.0, "temperature must be a number >= 0"),
    ("cfg_scale", float("nan"), "cfg_scale must be a number >= 0"),
    ("guidance_schedule", "sideways", "guidance_schedule='sideways'"),
])
def test_invalid_sampling_defaults_are_a_clear_error(field, value, message):
    with pytest.raises(ValueError, match=f"invalid SamplingDefaults: {message}"):
        SamplingDefaults(**{field: value})
    with pytest.raises(ValueError, match=f"invalid SamplingDefaults: {message}"):
        GeneratorConfig(model="maskgit", sampling={field: value}, **TINY)


def test_invalid_sampling_in_a_saved_config_is_refused_on_load(tmp_path):
    maskgit().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["sampling"]["top_p"] = 1.5
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"invalid SamplingDefaults: top_p must be in \(0, 1\] or null, got 1.5"):
        GeneratorModel.from_pretrained(tmp_path)
    meta["config"]["sampling"] = {"top_q": 0.5}
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"unknown SamplingDefaults field\(s\): \['top_q'\]"):
        GeneratorModel.from_pretrained(tmp_path)
    del meta["config"]["sampling"]  # generators saved before sampling defaults existed
    path.write_text(json.dumps(meta))
    assert GeneratorModel.from_pretrained(tmp_path).config.sampling == SamplingDefaults()


@pytest.mark.parametrize("weights,config", [("maskgit", "digits_maskgit"), ("ar", "digits_ar"),
                                            ("emoji_maskgit", "emoji_maskgit"), ("emoji_ar", "emoji_ar")])
def test_shipped_generators_sample_with_the_settings_of_their_training_config(weights, config):
    """app/weights/<weights>/config.json and configs/generator/<config>.yaml carry one set of sampling defaults
    (benchmarks/generator_quality.md and emoji_quality.md chose them): a retrained generator then ships with the
    same."""
    import yaml

    from runkit.pretrained import CONFIG_FILE

    shipped = json.loads((REPO / "app" / "weights" / weights / CONFIG_FILE).read_text())["config"]["sampling"]
    configured = yaml.safe_load((REPO / "configs" / "generator" / f"{config}.yaml").read_text())["sampling"]
    assert SamplingDefaults(**shipped) == SamplingDefaults(**configured)
