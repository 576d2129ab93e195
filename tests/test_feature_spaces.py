"""Metric feature spaces: the project classifier inside torch-fidelity, and Inception weights that never run code.

Issue 12 item 1 (a real feature space for the embedded data) and issue 13 items 1-2 (a crafted
Inception ``.pth`` must not execute; random Inception weights need no file at a guessable path).
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from evaluation import feature_spaces
from evaluation.feature_classifier import ClassifierConfig, FeatureClassifier
from evaluation.feature_spaces import (INCEPTION_LABEL, classifier_feature_space, inception_feature_space,
                                      metric_label, resolve_feature_space)
from evaluation.metrics import compute_fidelity_metrics

REPO = Path(__file__).resolve().parents[1]
CONFIGS = str(REPO / "configs")
DIGITS_CLASSIFIER = REPO / "app" / "weights" / "digits_classifier"
OLD_RANDOM_WEIGHTS = Path("flowmo_uncalibrated") / "inception_v3_random_seed0.pth"  # the pre-fix guessable path


class Images(torch.utils.data.Dataset):
    """torch-fidelity's input protocol: uint8 (3,H,W) tensors."""

    def __init__(self, images: torch.Tensor):
        assert images.dtype == torch.uint8 and images.dim() == 4
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def random_images(seed: int, count: int = 4, shift: int = 0, size: int = 32) -> Images:
    generator = torch.Generator().manual_seed(seed)
    return Images((torch.randint(0, 196, (count, 3, size, size), generator=generator) + shift).to(torch.uint8))


class _TouchOnUnpickle:
    """Unpickling this calls ``pathlib.Path.touch(marker)``: the stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def write_malicious_pth(path: Path, marker: Path) -> Path:
    """A ``.pth`` that looks like a state dict and writes ``marker`` when unpickled unsafely."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "payload": _TouchOnUnpickle(marker)}, path)
    return path


def test_the_malicious_pickle_really_runs_code_when_loaded_unsafely(tmp_path):
    """The probe used below is live: an unsafe load (what torch-fidelity does) writes the marker."""
    marker = tmp_path / "probe_marker"
    path = write_malicious_pth(tmp_path / "probe.pth", marker)
    torch.load(path, weights_only=False)
    assert marker.is_file()


@pytest.fixture(scope="module")
def digits_uint8() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits train split at 32 px as uint8 (N,3,H,W), and its labels."""
    from imagedata import DigitsDataset
    from runkit.images import tensor_to_uint8

    dataset = DigitsDataset("train", 32)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return tensor_to_uint8(images).permute(0, 3, 1, 2).contiguous(), dataset.targets.clone()


def fidelity(a: torch.Tensor, b: torch.Tensor, features, **kwargs) -> dict:
    return compute_fidelity_metrics(Images(a), Images(b), features=features, batch_size=64, verbose=False,
                                    save_cpu_ram=True, **kwargs)


# ---------------------------------------------------------------------------- (a) the classifier space
def test_classifier_features_plug_into_torch_fidelity(digits_uint8):
    import torch_fidelity

    images, labels = digits_uint8
    space = classifier_feature_space(DIGITS_CLASSIFIER)
    assert space.label == "digits classifier features" and space.calibrated
    assert space.metric_name("FID") == "FID (digits classifier features)" == metric_label("FID", space.label)
    threes, sevens = images[labels == 3], images[labels == 7]
    half_a, half_b = threes[0::2], threes[1::2]
    count = min(len(half_a), len(half_b), len(sevens))
    half_a, half_b, sevens = half_a[:count], half_b[:count], sevens[:count]

    itself = fidelity(threes, threes, space, prc=True)
    assert itself["calibrated"] is True and itself["feature_space"] == "digits classifier features"
    assert abs(itself["frechet_inception_distance"]) < 1e-6
    assert itself["precision"] == pytest.approx(1.0) and itself["recall"] == pytest.approx(1.0)
    same_class = fidelity(half_a, half_b, space, prc=True)["frechet_inception_distance"]
    other_class = fidelity(half_a, sevens, space, prc=True)
    assert other_class["frechet_inception_distance"] > 10 * same_class > 0
    assert other_class["precision"] < 0.5 and other_class["recall"] < 0.5  # threes do not cover sevens

    # torch-fidelity itself, given only the registered extractor's name, computes the same FID ...
    direct = torch_fidelity.calculate_metrics(
        input1=Images(half_a), input2=Images(sevens), fid=True, cuda=False, cache=False, verbose=False,
        save_cpu_ram=True, batch_size=64, feature_extractor=space.extractor, feature_layer_fid=space.fid_layer)
    assert direct["frechet_inception_distance"] == pytest.approx(other_class["frechet_inception_distance"],
                                                                 rel=1e-6)
    # ... and IS from the logits: ten confidently recognised classes score far above one class.
    mixed = torch.cat([images[labels == c][:20] for c in range(10)])
    isc = {name: compute_fidelity_metrics(Images(x), features=space, fid=False, isc=True, isc_splits=1,
                                          batch_size=64, verbose=False, save_cpu_ram=True)["inception_score_mean"]
           for name, x in (("mixed", mixed), ("threes", threes[:200]))}
    assert isc["mixed"] > 3 * isc["threes"] and isc["threes"] < 1.5


def test_classifier_extractor_checks_its_input():
    space = classifier_feature_space(DIGITS_CLASSIFIER)
    with pytest.raises(ValueError, match="uint8"):
        space.module(torch.zeros(2, 3, 16, 16))
    features, logits = space.module(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    assert features.shape == (2, 64) and logits.shape == (2, 10)


# ---------------------------------------------------------------------------- (b) crafted Inception weights
def test_malicious_inception_weights_are_refused_without_running_code(tmp_path):
    marker = tmp_path / "marker"
    evil = write_malicious_pth(tmp_path / "inception.pth", marker)
    with pytest.raises(ValueError, match="not a plain state dict of tensors and was not loaded"):
        inception_feature_space(evil, allow_random=False)
    with pytest.raises(ValueError, match="not a plain state dict of tensors and was not loaded"):
        resolve_feature_space("inception", classifier=None, inception_weights=evil, allow_random=True)
    with pytest.raises(ValueError, match="not a plain state dict of tensors and was not loaded"):  # auto without a classifier
        resolve_feature_space("auto", classifier=None, inception_weights=evil, allow_random=False)
    assert not marker.exists()


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    from tokenizer import FlowMo, FlowMoConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tokenizer")
    FlowMo(FlowMoConfig(image_size=32, patch_size=4, code_length=4, context_dim=12, lfq_bits=6, enc_width=0.5,
                        dec_width=0.5, enc_depth=1, dec_depth=1, num_heads=3)).save_pretrained(path)
    return path


def test_tokenizer_eval_refuses_malicious_inception_weights(tiny_tokenizer, tmp_path):
    from tokenizer.eval import evaluate

    marker = tmp_path / "marker"
    evil = write_malicious_pth(tmp_path / "inception.pth", marker)
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("tokenizer_eval", overrides=[
            "data=digits", f"checkpoint={tiny_tokenizer}", f"out_dir={tmp_path / 'out'}", "subsample=4",
            "batch_size=4", "steps=1", "metrics=[rfid]", "features=inception", f"inception_weights={evil}"])
    with pytest.raises(ValueError, match="not a plain state dict of tensors and was not loaded"):
        evaluate(cfg)
    assert not marker.exists()
    assert not (tmp_path / "out" / "reconstructions").exists()  # refused before any work


def test_eval_gfid_refuses_malicious_inception_weights(tmp_path):
    from evaluation.feature_spaces import feature_space_option

    marker = tmp_path / "marker"
    evil = write_malicious_pth(tmp_path / "inception.pth", marker)
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("eval_gfid", overrides=["checkpoint=unused", "tokenizer.checkpoint=unused", "reference=unused",
                                              f"inception_weights={evil}", "allow_random_weights=true"])
    with pytest.raises(ValueError, match="not a plain state dict of tensors and was not loaded"):
        feature_space_option(cfg)
    assert not marker.exists()


# ---------------------------------------------------------------------------- (c) random weights: no file
def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_random_inception_writes_and_reads_no_file(tmp_path, monkeypatch):
    tmp, torch_home = tmp_path / "tmp", tmp_path / "torch_home"
    tmp.mkdir()
    marker = tmp_path / "planted_marker"
    write_malicious_pth(tmp / OLD_RANDOM_WEIGHTS, marker)  # another local user got there first
    before = _tree(tmp)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(feature_spaces, "_INCEPTION_CACHE", {})  # build here, not reuse another test's network
    probe = random_images(0, count=2).images

    def fresh(seed: int):
        monkeypatch.setattr(feature_spaces, "_INCEPTION_CACHE", {})
        space = inception_feature_space(None, allow_random=True, seed=seed)
        with torch.no_grad():
            pool = space.module(probe)[feature_spaces.INCEPTION_FEATURES.index("2048")]
        return space, pool

    first, pool = fresh(0)
    assert first.calibrated is False and first.label == INCEPTION_LABEL and first.tag == "random-inception-seed0"
    again, pool_again = fresh(0)
    assert again is not first and again.extractor != first.extractor  # really built twice
    assert torch.equal(pool, pool_again)  # deterministic for a seed
    assert pool.shape == (2, 2048) and pool.std() > 0
    _, pool_other = fresh(1)
    assert not torch.allclose(pool, pool_other)
    # A whole metric run with the random network touches neither directory either.
    small = dataclasses.replace(first, fid_layer="64")
    result = compute_fidelity_metrics(random_images(1), random_images(2, shift=60), features=small, batch_size=4,
                                      verbose=False, save_cpu_ram=True)
    assert result["calibrated"] is False and result["frechet_inception_distance"] > 0
    assert _tree(tmp) == before  # nothing created, nothing rewritten
    assert not torch_home.exists() or not any(torch_home.rglob("*"))
    assert not marker.exists()  # the planted file was never unpickled


# ---------------------------------------------------------------------------- (d) no weight path for torch-fidelity
def test_torch_fidelity_never_unpickles_anything(tmp_path, monkeypatch):
    import torch_fidelity

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    loads, fidelity_calls = [], []
    real_load, real_calculate = torch.load, torch_fidelity.calculate_metrics

    def spy_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    def spy_calculate(**kwargs):
        fidelity_calls.append(kwargs)
        return real_calculate(**kwargs)

    def no_download(*args, **kwargs):
        raise AssertionError("load_state_dict_from_url called")

    monkeypatch.setattr(torch, "load", spy_load)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch_fidelity, "calculate_metrics", spy_calculate)
    monkeypatch.setattr(feature_spaces, "_INCEPTION_CACHE", {})

    random_space = dataclasses.replace(inception_feature_space(None, allow_random=True), fid_layer="64",
                                       prc_layer="64")
    result = compute_fidelity_metrics(random_images(0), random_images(1, shift=60), features=random_space, fid=True,
                                      isc=True, prc=True, isc_splits=1, batch_size=4, verbose=False,
                                      save_cpu_ram=True)
    assert result["frechet_inception_distance"] > 0 and 0 <= result["precision"] <= 1
    assert loads == []  # random weights: nothing loaded at all

    # Weights from a file: loaded once, by the project, with weights_only=True.
    weights = tmp_path / "inception.pth"
    torch.save(random_space.module.state_dict(), weights)
    from_file = dataclasses.replace(inception_feature_space(weights, allow_random=False), fid_layer="64")
    compute_fidelity_metrics(random_images(0), random_images(1, shift=60), features=from_file, batch_size=4,
                             verbose=False, save_cpu_ram=True)
    assert loads == [True]
    assert len(fidelity_calls) == 2
    for kwargs in fidelity_calls:
        assert "feature_extractor_weights_path" not in kwargs and kwargs["cache"] is False
        assert kwargs["feature_extractor"] in (random_space.extractor, from_file.extractor)


# ---------------------------------------------------------------------------- (e) the classifier itself
def test_classifier_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    config = ClassifierConfig(name="shapes", image_size=8, channels=[8], feature_dim=8, num_classes=3,
                              class_names=["a", "b", "c"], extra={"note": "test"})
    model = FeatureClassifier(config).eval()
    model.save_pretrained(tmp_path / "clf")
    loaded = FeatureClassifier.from_pretrained(tmp_path / "clf")
    assert loaded.config == config and not loaded.training
    images = torch.rand(4, 3, 20, 20) * 2 - 1  # resized to image_size inside
    with torch.no_grad():
        features, logits = model.features_and_logits(images)
        torch.testing.assert_close(loaded.features_and_logits(images), (features, logits), rtol=0, atol=0)
    assert features.shape == (4, 8) and logits.shape == (4, 3)
    space = classifier_feature_space(tmp_path / "clf")
    assert space.label == "shapes classifier features"
    assert space.metric_name("rFID") == "rFID (shapes classifier features)"
    assert resolve_feature_space("auto", classifier=tmp_path / "clf", inception_weights=None,
                                 allow_random=False) is space  # auto prefers the classifier; built once


def test_classifier_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a feature classifier.*train_classifier"):
        classifier_feature_space(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a feature classifier"):
        resolve_feature_space("classifier", classifier=tmp_path / "missing", inception_weights=None,
                              allow_random=True)
    with pytest.raises(ValueError, match="needs a classifier directory"):
        resolve_feature_space("classifier", classifier=None, inception_weights=None, allow_random=True)
    with pytest.raises(ValueError, match="image_size 12 is not divisible"):
        ClassifierConfig(image_size=12, channels=[8, 8, 8])
    with pytest.raises(ValueError, match="class_names"):
        ClassifierConfig(num_classes=3, class_names=["a"])
    FeatureClassifier(ClassifierConfig(image_size=8, channels=[8], feature_dim=8)).save_pretrained(tmp_path / "v")
    record = (tmp_path / "v" / "config.json")
    record.write_text(record.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ValueError, match="format_version 99"):
        FeatureClassifier.from_pretrained(tmp_path / "v")


def test_classifier_training_lowers_the_loss(digits_uint8):
    from evaluation.train_classifier import accuracy, random_affine, train_classifier

    images, labels = digits_uint8
    images = images[:400].float() / 127.5 - 1.0
    labels = labels[:400]
    config = ClassifierConfig(name="digits", image_size=8, channels=[16, 16], feature_dim=32, num_classes=10)
    model, losses = train_classifier(images, labels, config, steps=40, batch_size=32, lr=1e-2, show_progress=False)
    assert len(losses) == 40 and all(loss == loss for loss in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3  # from ln(10) = 2.30 towards ~1.6 (seeded)
    assert accuracy(model, images, labels) > 0.2  # chance is 0.1
    with pytest.raises(ValueError, match="steps and batch_size must be positive"):
        train_classifier(images, labels, config, steps=0)
    generator = torch.Generator().manual_seed(0)
    moved = random_affine(images[:4], generator)
    assert moved.shape == images[:4].shape and not torch.equal(moved, images[:4])
    assert float(moved.min()) >= -1.0 - 1e-5  # fill is the black background


def test_train_classifier_run_saves_a_usable_feature_space(tmp_path):
    from evaluation.train_classifier import run

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train_classifier", overrides=[f"out={tmp_path / 'clf'}", "steps=3", "batch_size=16",
                                                     "image_size=8", "channels=[8]", "feature_dim=8"])
    result = run(OmegaConf.to_container(cfg, resolve=True))
    assert result["train_images"] == 1500 and result["val_images"] == 297 and 0 <= result["val_accuracy"] <= 1
    loaded = FeatureClassifier.from_pretrained(tmp_path / "clf")
    assert loaded.config.name == "digits" and loaded.config.class_names[3] == "three"
    assert loaded.config.extra["val_accuracy"] == result["val_accuracy"] and loaded.config.extra["steps"] == 3
    assert classifier_feature_space(tmp_path / "clf").label == "digits classifier features"
