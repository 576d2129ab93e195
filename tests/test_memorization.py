"""Memorization and diversity measures (generator.memorization) and their place in the gFID report.

Issue 12 item 2: exact copies of training token sequences, nearest-training-image distance and
near duplicates / within-class diversity, each beside the same number for real data. No quality
thresholds on shipped models here: only whether each measure detects what it is meant to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generator.gfid import SamplePlan, ShardStore, run_gfid
from generator.gfid import run as gfid_run
from generator.memorization import (RealSets, duplicate_threshold, exact_copies, format_memorization,
                                    load_real_sets, memorization_report, near_duplicate_rate,
                                    near_duplicates_beside_real, nearest_distance, per_class_subset, rms_distances,
                                    thumbnails, within_class_diversity)
from evaluation.feature_spaces import INCEPTION_LABEL, FeatureSpace

SIZE = 16


# ---------------------------------------------------------------------------- exact copies
def test_exact_copies_finds_exactly_the_planted_training_sequences():
    generator = torch.Generator().manual_seed(0)
    training = torch.randint(0, 512, (50, 24), generator=generator)
    generated = torch.randint(0, 512, (30, 24), generator=generator)
    planted = [2, 7, 8, 19, 29]
    for slot, source in zip(planted, [0, 49, 13, 13, 21]):  # one training row planted twice
        generated[slot] = training[source]
    generated[3] = training[5].clone()
    generated[3, -1] = (training[5, -1] + 1) % 512  # one token off: not a copy
    flagged = exact_copies(generated, training)
    assert flagged.dtype == torch.bool and flagged.shape == (30,)
    assert flagged.nonzero().flatten().tolist() == planted
    assert exact_copies(generated.to(torch.int32), training).tolist() == flagged.tolist()  # dtype does not matter
    assert not exact_copies(generated[:1], training[:0]).any()  # empty training set
    with pytest.raises(ValueError, match="same tokenizer"):
        exact_copies(generated[:, :12], training)


# ---------------------------------------------------------------------------- distances
def test_thumbnails_and_distances():
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    images[1] = 255
    thumbs = thumbnails(images)
    assert thumbs.shape == (2, 3 * 32 * 32) and float(thumbs[0].max()) == 0.0 and float(thumbs[1].min()) == 1.0
    assert thumbnails(images[:, :, :16, :16]).shape == (2, 3 * 16 * 16)  # small images are not upscaled
    with pytest.raises(ValueError, match="uint8"):
        thumbnails(images.float())
    distances = rms_distances(thumbs, thumbs, chunk=1)
    torch.testing.assert_close(distances, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert nearest_distance(thumbs[:1], thumbs[1:]).tolist() == [1.0]


def test_duplicate_threshold_and_diversity_on_known_distances():
    # One feature, so the RMS distance is |a - b|. Class 0: 0, 1, 3 (pairs 1, 2, 3); class 1: 10, 10.5 (0.5).
    features = torch.tensor([[0.0], [1.0], [10.0], [3.0], [10.5]])
    labels = torch.tensor([0, 0, 1, 0, 1])
    assert duplicate_threshold(features, labels, percentile=0) == pytest.approx(0.5)  # cross-class 7 is ignored
    assert duplicate_threshold(features, labels, percentile=100) == pytest.approx(3.0)
    assert duplicate_threshold(features, labels, percentile=50) == pytest.approx(1.5)  # of 0.5, 1, 2, 3
    # Nearest same-class neighbour: 1, 1, 0.5, 2, 0.5.
    assert near_duplicate_rate(features, labels, 0.75) == pytest.approx(2 / 5)
    assert near_duplicate_rate(features, labels, 1.5) == pytest.approx(4 / 5)
    assert within_class_diversity(features, labels) == pytest.approx((2.0 + 0.5) / 2)
    assert within_class_diversity(torch.zeros(4, 3), torch.tensor([0, 0, 1, 1])) == 0.0
    with pytest.raises(ValueError, match="at least two real items"):
        duplicate_threshold(features[:2], torch.tensor([0, 1]))
    subset = per_class_subset(torch.tensor([0, 0, 0, 1, 1, 2]), 2, seed=1)
    assert torch.bincount(torch.tensor([0, 0, 0, 1, 1, 2])[subset]).tolist() == [2, 2, 1]
    assert subset.tolist() == sorted(subset.tolist()) and torch.equal(subset, per_class_subset(
        torch.tensor([0, 0, 0, 1, 1, 2]), 2, seed=1))


def test_near_duplicates_beside_real_uses_one_real_threshold_and_averages_real_draws():
    # Real: class 0 at 0, 0.1, 5, 9 (closest pair 0.1); class 1 at 20, 20.1, 30, 40.
    real = torch.tensor([[0.0], [0.1], [5.0], [9.0], [20.0], [20.1], [30.0], [40.0]])
    real_labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    threshold = duplicate_threshold(real, real_labels)
    samples = torch.tensor([[1.0], [1.05], [7.0], [50.0], [60.0]])  # one close pair of class 0
    labels = torch.tensor([0, 0, 0, 1, 1])
    result = near_duplicates_beside_real(samples, labels, real, real_labels, seed=3, draws=4)
    assert result["duplicate_threshold"] == threshold and result["real_per_class"] == 3
    assert result["near_duplicate_rate"] == pytest.approx(2 / 5)
    # The real rate is the mean over the draws of 3 real items per class, seeds 3..6.
    draws = [near_duplicate_rate(real[p], real_labels[p], threshold)
             for p in (per_class_subset(real_labels, 3, seed) for seed in range(3, 7))]
    assert len(set(draws)) > 1  # the draws differ, so averaging them is what is tested
    assert result["near_duplicate_rate_real"] == pytest.approx(float(np.mean(draws)))
    assert near_duplicates_beside_real(samples, labels, real, real_labels, seed=3, draws=1)[
        "near_duplicate_rate_real"] == pytest.approx(draws[0])
    with pytest.raises(ValueError, match="same space"):
        near_duplicates_beside_real(samples.repeat(1, 2), labels, real, real_labels)
    with pytest.raises(ValueError, match="draws must be >= 1"):
        near_duplicates_beside_real(samples, labels, real, real_labels, draws=0)


@pytest.fixture(scope="module")
def digits() -> tuple[RealSets, torch.Tensor]:
    """Digits at 16 px: the train split as the real set, and the val split's labels."""
    from imagedata import DigitsDataset

    return load_real_sets({"name": "digits"}, SIZE), DigitsDataset("val", SIZE).targets.clone()


def test_near_duplicates_flag_identical_images_and_few_real_digits(digits):
    real, _ = digits
    thumbs = thumbnails(real.train_images)
    threshold = duplicate_threshold(thumbs, real.train_labels)
    assert threshold > 0
    collapsed = torch.cat([thumbs[real.train_labels == c][:1].repeat(20, 1) for c in range(10)])
    collapsed_labels = torch.arange(10).repeat_interleave(20)
    assert near_duplicate_rate(collapsed, collapsed_labels, threshold) == 1.0
    assert within_class_diversity(collapsed, collapsed_labels) < 1e-3
    pick = per_class_subset(real.train_labels, 20)
    real_rate = near_duplicate_rate(thumbs[pick], real.train_labels[pick], threshold)
    assert 0.0 < real_rate < 0.6
    assert within_class_diversity(thumbs[pick], real.train_labels[pick]) > 0.1


def test_memorization_report_of_held_out_digits_matches_real_data(digits):
    real, val_labels = digits
    report = memorization_report(real.heldout_images, val_labels, None, real)
    assert "exact_copy_rate" not in report  # no tokens given
    assert report["real_per_class"] == int(torch.bincount(val_labels).max())
    # Held-out real digits are what real data looks like: every measure sits near its reference.
    assert report["nn_train_distance"] == pytest.approx(report["nn_train_distance_real"])  # the same images
    assert abs(report["near_duplicate_rate"] - report["near_duplicate_rate_real"]) < 0.12
    assert report["near_duplicate_rate_real"] < 0.6
    assert report["diversity"] == pytest.approx(report["diversity_real"], rel=0.15)
    # A copying generator (training images themselves) sits at distance 0; a collapsed one at rate 1.
    pick = per_class_subset(real.train_labels, 30)
    copying = memorization_report(real.train_images[pick], real.train_labels[pick], None, real)
    assert copying["nn_train_distance"] == 0.0 < report["nn_train_distance_real"]
    collapsed = torch.cat([real.train_images[real.train_labels == c][:1].repeat(30, 1, 1, 1) for c in range(10)])
    collapse = memorization_report(collapsed, torch.arange(10).repeat_interleave(30), None, real)
    assert collapse["near_duplicate_rate"] == 1.0 and collapse["diversity"] < 0.1 * collapse["diversity_real"]
    lines = format_memorization(report)
    assert lines[0].startswith("near-duplicate rate: ") and "(real data: " in lines[0]
    assert len(lines) == 3  # no exact-copy line without tokens
    with pytest.raises(ValueError, match="same resolution"):
        memorization_report(real.heldout_images[:, :, :8, :8].contiguous(), val_labels, None, real)


def test_memorization_report_counts_exact_token_copies():
    generator = torch.Generator().manual_seed(0)
    train_images = torch.randint(0, 256, (12, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    real = RealSets(train_images, torch.arange(12) % 3, train_images[:3].clone(),
                    torch.randint(0, 64, (12, 8), generator=generator))
    tokens = torch.cat([real.train_tokens[:3], torch.full((3, 8), 99)])  # 3 copies of 6
    report = memorization_report(train_images[:6], torch.arange(6) % 3, tokens, real)
    assert report["exact_copy_rate"] == pytest.approx(0.5)
    assert format_memorization(report)[0] == "exact copies of training tokens: 0.5000"
    assert "exact_copy_rate" not in memorization_report(train_images[:6], torch.arange(6) % 3, tokens,
                                                        RealSets(real.train_images, real.train_labels,
                                                                 real.heldout_images))


# ---------------------------------------------------------------------------- in the gFID harness
def stub_features() -> FeatureSpace:
    return FeatureSpace(extractor="unused", label=INCEPTION_LABEL, calibrated=False, tag="stub", fid_layer="2048",
                        isc_layer="logits_unbiased", prc_layer="2048", module=torch.nn.Identity())


def write_reference_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture
def toy_real() -> RealSets:
    """12 training images of 3 classes (image i has class i % 3) with their token sequences."""
    generator = torch.Generator().manual_seed(1)
    train_images = torch.randint(0, 256, (12, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    heldout = torch.randint(0, 256, (6, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    return RealSets(train_images, torch.arange(12) % 3, heldout, torch.randint(0, 64, (12, 8), generator=generator))


def copying_sample_fn(real: RealSets, copy_tokens: bool = True):
    """A generator that returns training image j of the asked class (j from the seed), and its tokens."""

    def sample_fn(class_ids: torch.Tensor, seeds: torch.Tensor):
        picks = torch.tensor([(int(s) % 4) * 3 + int(c) for c, s in zip(class_ids, seeds)])
        images = real.train_images[picks].float() / 127.5 - 1.0
        tokens = real.train_tokens[picks] if copy_tokens else real.train_tokens[picks] + 1000
        return images, tokens

    return sample_fn


@pytest.mark.parametrize("copy_tokens, rate", [(True, 1.0), (False, 0.0)])
def test_run_gfid_reports_exact_copies_of_training_tokens(tmp_path, monkeypatch, toy_real, copy_tokens, rate):
    monkeypatch.setattr(gfid_run, "compute_metrics", lambda generated, reference, **kwargs: ({"fid": 1.0}, False))
    sizes = []

    def memorization(image_size: int) -> RealSets:
        sizes.append(image_size)
        return toy_real

    report = run_gfid(copying_sample_fn(toy_real, copy_tokens), num_samples=9, num_classes=3,
                      out_dir=tmp_path / "run", reference=write_reference_folder(tmp_path / "ref", 3),
                      features=stub_features(), memorization=memorization, shard_size=4, batch_size=2,
                      metrics=("fid",), cache_dir=tmp_path / "cache", verbose=False)
    assert sizes == [SIZE]
    saved = json.loads(Path(report.files["report"]).read_text())
    assert saved["memorization"]["exact_copy_rate"] == rate
    assert saved["memorization"]["nn_train_distance"] == 0.0  # the images are training images either way
    assert f"exact copies of training tokens: {rate:.4f}" in report.summary()
    stored = ShardStore(tmp_path / "run", SamplePlan(**report.settings["plan"])).read_all()
    assert stored["tokens"].shape == (9, 8) and stored["indices"].tolist() == list(range(9))
    assert exact_copies(torch.from_numpy(stored["tokens"]), toy_real.train_tokens).all() == copy_tokens


def test_run_gfid_without_tokens_reports_no_copy_rate(tmp_path, monkeypatch, toy_real):
    monkeypatch.setattr(gfid_run, "compute_metrics", lambda generated, reference, **kwargs: ({"fid": 1.0}, False))
    images_only = copying_sample_fn(toy_real)
    report = run_gfid(lambda c, s: images_only(c, s)[0], num_samples=6, num_classes=3, out_dir=tmp_path / "run",
                      reference=write_reference_folder(tmp_path / "ref", 3), features=stub_features(),
                      memorization=lambda size: toy_real, shard_size=6, batch_size=3, metrics=("fid",),
                      cache_dir=tmp_path / "cache", verbose=False)
    assert "exact_copy_rate" not in report.memorization and "near_duplicate_rate" in report.memorization
    assert "tokens" not in ShardStore(tmp_path / "run", SamplePlan(**report.settings["plan"])).read_all()
