"""gFID harness: the sampling plan, resumable shards, the ADM npz, and metrics vs torch-fidelity."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generator.gfid import (SamplePlan, ShardImages, ShardStore, classes_for_samples, generate_shards,
                            make_sample_fn, resolve_reference, run_gfid, sample_seed, write_adm_npz)
from generator.gfid import run as gfid_run
from evaluation.feature_spaces import INCEPTION_LABEL, FeatureSpace

REPO = Path(__file__).resolve().parents[1]
SIZE = 16


def stub_features(label: str = INCEPTION_LABEL, calibrated: bool = False) -> FeatureSpace:
    """A feature space for runs whose compute_metrics is faked: only its label and tag are read."""
    return FeatureSpace(extractor="unused", label=label, calibrated=calibrated, tag=f"stub-{label}",
                        fid_layer="2048", isc_layer="logits_unbiased", prc_layer="2048", module=torch.nn.Identity())


def fake_sample_fn(class_ids: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Deterministic per sample: a function of (class, seed) only, like an ideal sampler."""
    images = []
    for label, seed in zip(class_ids.tolist(), seeds.tolist()):
        rng = torch.Generator().manual_seed(seed)
        images.append((torch.rand(3, SIZE, SIZE, generator=rng) * 2 - 1 + label / 10).clamp(-1, 1))
    return torch.stack(images)


class Crash(RuntimeError):
    pass


def crashing_after(calls: int):
    count = {"n": 0}

    def sample_fn(class_ids, seeds):
        count["n"] += 1
        if count["n"] > calls:
            raise Crash("simulated kill")
        return fake_sample_fn(class_ids, seeds)

    return sample_fn


def all_samples(store: ShardStore) -> dict[str, np.ndarray]:
    parts = [store.read(k) for k in range(store.plan.num_shards)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


# ---------------------------------------------------------------------------- plan
def test_plan_is_class_balanced_round_robin_and_sharded_without_gaps():
    plan = SamplePlan(num_samples=25, num_classes=10, seed=3, shard_size=7, batch_size=3)
    assert plan.class_counts().tolist() == [3] * 5 + [2] * 5
    assert SamplePlan(num_samples=50_000, num_classes=1000).class_counts().tolist() == [50] * 1000
    assert plan.num_shards == 4
    covered = np.concatenate([plan.shard_indices(k) for k in range(plan.num_shards)])
    assert covered.tolist() == list(range(25))
    per_process = [plan.shards_for_process(rank, 3) for rank in range(3)]
    assert sorted(sum(per_process, [])) == list(range(plan.num_shards))
    assert per_process[1] == [1]
    assert classes_for_samples([0, 9, 10, 23], 10).tolist() == [0, 9, 0, 3]


def test_sample_seeds_depend_on_global_seed_and_index_only():
    seeds = [sample_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100 and all(0 <= s < 2 ** 63 for s in seeds)
    assert sample_seed(0, 5) == sample_seed(0, 5)
    assert sample_seed(1, 5) != sample_seed(0, 5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_samples=0, num_classes=10), "num_samples"),
    (dict(num_samples=10, num_classes=10, shard_size=4, batch_size=5), "batch_size"),
])
def test_plan_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplePlan(**kwargs)


# ---------------------------------------------------------------------------- shards
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    plan = SamplePlan(num_samples=23, num_classes=4, seed=7, shard_size=5, batch_size=2)
    reference = ShardStore(tmp_path / "straight", plan)
    assert generate_shards(fake_sample_fn, reference, show_progress_bar=False) == 23

    resumed = ShardStore(tmp_path / "resumed", plan)
    with pytest.raises(Crash):
        generate_shards(crashing_after(7), resumed, show_progress_bar=False)  # dies inside shard 2
    assert resumed.done_shards() == [0, 1]
    assert generate_shards(fake_sample_fn, resumed, show_progress_bar=False) == 13  # shards 2..4 only

    expected, got = all_samples(reference), all_samples(resumed)
    assert got["indices"].tolist() == list(range(23))
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    pngs = sorted(p.name for p in resumed.images_dir.glob("*.png"))
    assert len(pngs) == 23 and pngs == sorted(p.name for p in reference.images_dir.glob("*.png"))
    assert not list(resumed.shards_dir.glob(".*tmp*"))
    np.testing.assert_array_equal(np.asarray(Image.open(resumed.png_path(22, 2))), expected["images"][22])


def test_images_do_not_depend_on_the_number_of_processes(tmp_path):
    plan = SamplePlan(num_samples=17, num_classes=3, seed=1, shard_size=4, batch_size=4)
    single = ShardStore(tmp_path / "one", plan, save_png=False)
    generate_shards(fake_sample_fn, single, show_progress_bar=False)
    multi = ShardStore(tmp_path / "three", plan, save_png=False)
    counts = [generate_shards(fake_sample_fn, multi, rank=r, world_size=3, show_progress_bar=False)
              for r in range(3)]
    assert counts == [8, 5, 4]
    np.testing.assert_array_equal(all_samples(multi)["images"], all_samples(single)["images"])


def test_sample_fn_output_is_checked(tmp_path):
    store = ShardStore(tmp_path, SamplePlan(num_samples=4, num_classes=2, shard_size=4, batch_size=4))
    with pytest.raises(ValueError, match=r"\(4, 3, H, W\)"):
        generate_shards(lambda c, s: torch.zeros(4, 1, 8, 8), store, show_progress_bar=False)
    with pytest.raises(ValueError, match="non-finite"):
        generate_shards(lambda c, s: torch.full((4, 3, 8, 8), float("nan")), store, show_progress_bar=False)
    assert store.done_shards() == []


def test_adm_npz_and_shard_dataset_hold_every_sample_in_order(tmp_path):
    plan = SamplePlan(num_samples=11, num_classes=3, seed=2, shard_size=4, batch_size=2)
    store = ShardStore(tmp_path, plan, save_png=False)
    generate_shards(fake_sample_fn, store, show_progress_bar=False)
    expected = all_samples(store)
    path = write_adm_npz(store, tmp_path / "samples.npz")
    with np.load(path) as data:
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (11, SIZE, SIZE, 3)
        np.testing.assert_array_equal(data["arr_0"], expected["images"])
        assert data["arr_1"].tolist() == [i % 3 for i in range(11)]
    dataset = ShardImages(store)
    assert len(dataset) == 11 and dataset[9].dtype == torch.uint8 and dataset[9].shape == (3, SIZE, SIZE)
    np.testing.assert_array_equal(dataset[9].permute(1, 2, 0).numpy(), expected["images"][9])


def test_changed_settings_are_refused_on_resume(tmp_path):
    plan = SamplePlan(num_samples=4, num_classes=2, shard_size=2, batch_size=2)
    ShardStore(tmp_path, plan).check_plan({"cfg_scale": 2.0})
    ShardStore(tmp_path, plan).check_plan({"cfg_scale": 2.0})  # same settings: resume is fine
    with pytest.raises(ValueError, match="settings.cfg_scale"):
        ShardStore(tmp_path, plan).check_plan({"cfg_scale": 3.0})
    with pytest.raises(ValueError, match="plan.batch_size"):
        ShardStore(tmp_path, SamplePlan(num_samples=4, num_classes=2, shard_size=2, batch_size=1)).check_plan(
            {"cfg_scale": 2.0})


# ---------------------------------------------------------------------------- sample_fn from models
def test_make_sample_fn_chains_generator_and_tokenizer_reproducibly():
    from generator import GeneratorConfig, MaskGIT
    from tokenizer import FlowMo, FlowMoConfig

    torch.manual_seed(0)
    tokenizer = FlowMo(FlowMoConfig.preset("tiny")).eval()
    generator_model = MaskGIT(GeneratorConfig(model="maskgit", seq_len=tokenizer.config.num_indices,
                                              vocab_size=tokenizer.config.vocab_size, num_classes=3, width=32,
                                              depth=1, num_heads=2)).eval()
    sample_fn = make_sample_fn(generator_model, tokenizer, {"num_steps": 2, "cfg_scale": None},
                               {"steps": 1, "cfg": 1.0})
    class_ids, seeds = torch.tensor([0, 2]), torch.tensor([11, 12])
    first, tokens = sample_fn(class_ids, seeds)
    assert first.shape == (2, 3, 32, 32) and first.dtype == torch.float32
    assert tokens.shape == (2, tokenizer.config.num_indices) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) < tokenizer.config.vocab_size
    # The images are the decoded tokens (what copy detection relies on).
    noise = torch.stack([torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    torch.testing.assert_close(tokenizer.decode(tokens, noise=noise, steps=1, cfg=1.0), first, rtol=0, atol=1e-5)
    again, again_tokens = sample_fn(class_ids, seeds)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert torch.equal(again_tokens, tokens)
    assert not torch.equal(sample_fn(class_ids, torch.tensor([11, 13]))[0][1], first[1])
    # A sample depends on its own seed only: generated alone it matches its row of the batch.
    alone, alone_tokens = sample_fn(class_ids[1:], seeds[1:])
    torch.testing.assert_close(alone, first[1:], rtol=0, atol=1e-5)
    assert torch.equal(alone_tokens, tokens[1:])
    with pytest.raises(ValueError, match="'generator' is set by the harness"):
        make_sample_fn(generator_model, tokenizer, {"generator": None})


# ---------------------------------------------------------------------------- run_gfid
def write_reference_folder(folder: Path, count: int, seed: int = 123) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def eval_gfid_cfg(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("eval_gfid", overrides=["checkpoint=unused", "tokenizer.checkpoint=unused",
                                               "reference=unused", *overrides])


def test_missing_inception_weights_fail_before_generation(tmp_path):
    """eval_gfid builds its feature space (first thing in main) before any model or sample exists."""
    from evaluation.feature_spaces import feature_space_option
    from evaluation.perceptual import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="inception_weights="):
        feature_space_option(eval_gfid_cfg())
    with pytest.raises(MissingWeightsError, match="missing.pth"):
        feature_space_option(eval_gfid_cfg(f"inception_weights={tmp_path / 'missing.pth'}",
                                           "allow_random_weights=true"))
    with pytest.raises(ValueError, match="needs a classifier directory"):
        feature_space_option(eval_gfid_cfg("features=classifier"))
    # run_gfid has no implicit feature space: nothing is generated without one.
    calls = []
    with pytest.raises(TypeError, match="features"):
        run_gfid(lambda c, s: calls.append(1), num_samples=4, num_classes=2, out_dir=tmp_path / "run",
                 reference=write_reference_folder(tmp_path / "ref", 2))
    assert calls == []


def test_feature_space_option_picks_the_data_configs_classifier(monkeypatch):
    from evaluation.feature_spaces import feature_space_option

    monkeypatch.chdir(REPO)  # the data config names the classifier relative to the repository
    digits = feature_space_option(eval_gfid_cfg("data=digits"))  # features=auto: the data config names one
    assert digits.label == "digits classifier features" and digits.calibrated
    assert digits.metric_name("gFID") == "gFID (digits classifier features)"
    forced = feature_space_option(eval_gfid_cfg("data=digits", "features=inception", "allow_random_weights=true"))
    assert forced.label == INCEPTION_LABEL and not forced.calibrated and forced.metric_name("gFID") == "gFID"
    assert feature_space_option(eval_gfid_cfg("allow_random_weights=true")).label == INCEPTION_LABEL  # no data


def test_run_gfid_resumes_and_reports(tmp_path, monkeypatch):
    seen = {}

    def fake_metrics(generated, reference, **kwargs):
        seen["images"] = torch.stack([generated[i] for i in range(len(generated))])
        return {"fid": 12.5, "isc_mean": 1.5, "isc_std": 0.1}, False

    monkeypatch.setattr(gfid_run, "compute_metrics", fake_metrics)
    reference = write_reference_folder(tmp_path / "ref", 3)
    common = dict(num_samples=9, num_classes=3, reference=reference, features=stub_features(),
                  shard_size=4, batch_size=2, seed=5, metrics=("fid", "isc"), class_names=["a", "b", "c"],
                  settings={"cfg_scale": 2.0}, cache_dir=tmp_path / "cache", verbose=False)
    with pytest.raises(Crash):
        run_gfid(crashing_after(3), out_dir=tmp_path / "run", **common)
    fractions = []
    report = run_gfid(fake_sample_fn, out_dir=tmp_path / "run", progress=lambda f, m: fractions.append(f),
                      **common)
    assert report.generated_this_run == 5 and report.num_samples == 9 and report.image_size == (SIZE, SIZE)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    saved = json.loads(Path(report.files["report"]).read_text())
    assert saved["metrics"] == {"fid": 12.5, "isc_mean": 1.5, "isc_std": 0.1}
    assert saved["calibrated"] is False and "UNCALIBRATED" in saved["uncalibrated_note"]
    assert saved["settings"]["cfg_scale"] == 2.0 and saved["settings"]["plan"]["batch_size"] == 2
    assert saved["feature_space"] == INCEPTION_LABEL and saved["settings"]["features"] == f"stub-{INCEPTION_LABEL}"
    assert saved["memorization"] == {}  # not asked for
    summary = report.summary()
    assert "gFID" in summary and "UNCALIBRATED" in summary and "9 samples" in summary
    assert report.metric_lines()[0].startswith("gFID: 12.5000") and "UNCALIBRATED" in report.metric_lines()[0]
    assert Image.open(report.files["grid"]).size[0] > SIZE
    with np.load(report.files["samples_npz"]) as data:
        assert data["arr_0"].shape == (9, SIZE, SIZE, 3)
        np.testing.assert_array_equal(data["arr_0"], seen["images"].permute(0, 2, 3, 1).numpy())
    straight = ShardStore(tmp_path / "straight", report_plan(report))
    generate_shards(fake_sample_fn, straight, show_progress_bar=False)
    np.testing.assert_array_equal(all_samples(straight)["images"], seen["images"].permute(0, 2, 3, 1).numpy())


def report_plan(report) -> SamplePlan:
    return SamplePlan(**report.settings["plan"])


def test_report_names_metrics_for_their_feature_space(tmp_path, monkeypatch):
    monkeypatch.setattr(gfid_run, "compute_metrics",
                        lambda generated, reference, **kwargs: ({"fid": 3.0, "precision": 0.5}, True))
    features = stub_features("digits classifier features", calibrated=True)
    report = run_gfid(fake_sample_fn, num_samples=4, num_classes=2, out_dir=tmp_path / "run",
                      reference=write_reference_folder(tmp_path / "ref", 2), features=features, shard_size=4,
                      batch_size=2, metrics=("fid", "prc"), cache_dir=tmp_path / "cache", verbose=False)
    assert report.metric_lines() == ["gFID (digits classifier features): 3.0000",
                                     "precision (digits classifier features): 0.5000"]
    assert "UNCALIBRATED" not in report.summary() and report.summary().count("\n") >= 1
    saved = json.loads(Path(report.files["report"]).read_text())
    assert saved["feature_space"] == "digits classifier features" and saved["uncalibrated_note"] is None


@pytest.fixture(scope="module")
def random_inception() -> FeatureSpace:
    """The random Inception network, its FID on the 64-dim layer (cheap eigendecomposition on a CPU)."""
    from evaluation.feature_spaces import inception_feature_space

    return dataclasses.replace(inception_feature_space(None, allow_random=True), fid_layer="64", prc_layer="64")


@pytest.mark.slow  # Inception-v3 at 299 px: ~1-3 s per image on a shared CPU
def test_fid_equals_torch_fidelity_on_the_same_folders(tmp_path, monkeypatch, random_inception):
    import torch_fidelity

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # keep torch-fidelity's cache in tmp
    reference = write_reference_folder(tmp_path / "ref", 3)
    report = run_gfid(fake_sample_fn, num_samples=3, num_classes=3, out_dir=tmp_path / "run", reference=reference,
                      features=random_inception, shard_size=3, batch_size=3, metrics=("fid",),
                      cache_dir=tmp_path / "cache", verbose=False)
    direct = torch_fidelity.calculate_metrics(
        input1=report.files["images"], input2=str(reference), fid=True, cuda=False, cache=False, verbose=False,
        save_cpu_ram=True, feature_extractor=random_inception.extractor, feature_layer_fid="64")
    assert report.metrics["fid"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-5, abs=1e-6)
    assert report.metrics["fid"] > 0


@pytest.mark.slow
def test_fid_against_statistics_file_matches_fid_against_its_images(tmp_path, monkeypatch, random_inception):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    from torch_fidelity.metric_fid import fid_input_id_to_statistics
    from torch_fidelity.utils import create_feature_extractor

    reference = write_reference_folder(tmp_path / "ref", 3)
    extractor = create_feature_extractor(random_inception.extractor, ["64"], cuda=False, verbose=False)
    reference_stats = fid_input_id_to_statistics(1, extractor, "64", input1=str(reference), cuda=False,
                                                 verbose=False, save_cpu_ram=True, cache=False)
    mu, sigma = reference_stats["mu"], reference_stats["sigma"]
    stats = tmp_path / "ref_stats.npz"
    np.savez(stats, mu=mu, sigma=sigma)
    common = dict(num_samples=3, num_classes=3, features=random_inception, shard_size=3, batch_size=3,
                  metrics=("fid",), cache_dir=tmp_path / "cache", verbose=False)
    from_folder = run_gfid(fake_sample_fn, out_dir=tmp_path / "a", reference=reference, **common)
    from_stats = run_gfid(fake_sample_fn, out_dir=tmp_path / "b", reference=stats, **common)
    assert from_stats.metrics["fid"] == pytest.approx(from_folder.metrics["fid"], rel=1e-4)
    with pytest.raises(ValueError, match="need reference images"):
        run_gfid(fake_sample_fn, out_dir=tmp_path / "b", reference=stats, **{**common, "metrics": ("fid", "prc")})


def test_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "generator.eval_gfid", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "num_samples" in result.stdout and "inception_weights" in result.stdout


@pytest.mark.slow
def test_command_line_run_with_saved_models_writes_report(tmp_path):
    from generator import GeneratorConfig, MaskGIT
    from tokenizer import FlowMo, FlowMoConfig

    torch.manual_seed(0)
    tokenizer = FlowMo(FlowMoConfig.preset("tiny"))
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    MaskGIT(GeneratorConfig(model="maskgit", seq_len=tokenizer.config.num_indices,
                            vocab_size=tokenizer.config.vocab_size, num_classes=3, width=32, depth=1, num_heads=2,
                            tokenizer_hash=tokenizer.config.architecture_hash())).save_pretrained(tmp_path / "gen")
    reference = write_reference_folder(tmp_path / "ref", 2)
    command = [sys.executable, "-m", "generator.eval_gfid", f"checkpoint={tmp_path / 'gen'}",
               f"tokenizer.checkpoint={tmp_path / 'tokenizer'}", f"reference={reference}", "num_samples=3",
               "shard_size=2", "batch_size=2", "sampling.num_steps=2", "decoding.steps=1", "metrics=[fid]",
               "allow_random_weights=true", f"out_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}",
               f"hydra.run.dir={tmp_path / 'hydra'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TORCH_HOME": str(tmp_path / "torch_home")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gFID" in result.stdout and "UNCALIBRATED" in result.stdout
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["num_samples"] == 3 and report["calibrated"] is False and "fid" in report["metrics"]
    assert report["settings"]["sampling"]["num_steps"] == 2
    assert len(list((tmp_path / "run" / "images").glob("*.png"))) == 3


def test_dataset_reference_is_exported_once_as_png_folder(tmp_path):
    reference = resolve_reference({"name": "digits"}, image_size=SIZE, cache_dir=tmp_path,
                                       split="val", max_reference_images=5, show_progress_bar=False)
    folder = Path(reference.images)
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 5 and (folder / "COMPLETE").is_file()
    assert np.asarray(Image.open(pngs[0])).shape == (SIZE, SIZE, 3)
    assert f"{SIZE}px" in folder.name and "n5" in folder.name
    stamp = pngs[0].stat().st_mtime_ns
    again = resolve_reference({"name": "digits"}, image_size=SIZE, cache_dir=tmp_path,
                                   split="val", max_reference_images=5, show_progress_bar=False)
    assert again.images == reference.images and again.description == reference.description
    assert pngs[0].stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="does not exist"):
        resolve_reference(tmp_path / "nope", image_size=SIZE, cache_dir=tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=np.zeros(4))
    with pytest.raises(ValueError, match="sigma"):
        resolve_reference(bad, image_size=SIZE, cache_dir=tmp_path)
