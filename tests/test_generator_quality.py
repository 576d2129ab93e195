"""benchmarks/generator_quality.py: the 8×8 digit-space columns and the verdict that reads them (issue 26)."""

from __future__ import annotations

import pytest
import torch

from generator.memorization import RealSets, load_real_sets, per_class_subset


@pytest.fixture(scope="module")
def quality(benchmark_module):
    return benchmark_module("generator_quality")


@pytest.fixture(scope="module")
def real() -> RealSets:
    return load_real_sets({"name": "digits"}, 32)


def test_digit_space_values_tell_real_digits_from_a_textured_collapse(quality, real):
    pick = per_class_subset(real.train_labels, 20, seed=5)
    honest = quality.digit_space_values(real.train_images[pick], real.train_labels[pick], real, seed=0)
    assert honest["class_accuracy_8x8"] > 0.97
    assert honest["near_duplicate_rate_8x8"] < 1.6 * honest["near_duplicate_rate_real_8x8"]
    # One digit per class under per-sample pixel noise: varied at 32 px, the same digit in 8×8.
    base = torch.cat([real.train_images[real.train_labels == c][:1].repeat(20, 1, 1, 1) for c in range(10)])
    noise = torch.randint(-40, 41, base.shape[:1] + (1,) + base.shape[2:], generator=torch.Generator().manual_seed(0))
    collapsed = (base.int() + noise).clamp(0, 255).to(torch.uint8)
    values = quality.digit_space_values(collapsed, torch.arange(10).repeat_interleave(20), real, seed=0)
    assert values["near_duplicate_rate_8x8"] == 1.0 and values["class_accuracy_8x8"] > 0.9
    assert values["near_duplicate_rate_real_8x8"] == pytest.approx(honest["near_duplicate_rate_real_8x8"])


def test_verdict_fails_a_generator_that_only_looks_diverse_at_32_px(quality):
    reference = {"recall": 0.8, "fid": 0.1}
    passing = {"class_accuracy": 0.98, "exact_copy_rate": 0.0, "near_duplicate_rate": 0.3,
               "near_duplicate_rate_real": 0.3, "recall": 0.8, "fid": 0.15, "class_accuracy_8x8": 0.97,
               "near_duplicate_rate_8x8": 0.35, "near_duplicate_rate_real_8x8": 0.3}
    assert "NO" not in quality.verdict(passing, reference)
    collapsed = {**passing, "near_duplicate_rate_8x8": 0.4}  # 1.33x real in 8×8, fine at 32 px
    assert quality.verdict(collapsed, reference).count("NO") == 1
    assert "near-dup 8×8 <= 1.3x real: NO" in quality.verdict(collapsed, reference)
    unrecognised = {**passing, "class_accuracy_8x8": 0.94}
    assert "class acc 8×8 >= 0.95: NO" in quality.verdict(unrecognised, reference)
    # Other data have no 8×8 space: the verdict leaves those checks out instead of failing them.
    other = {k: v for k, v in passing.items() if not k.endswith("8x8")}
    assert "8×8" not in quality.verdict(other, reference)
    row = quality.row(other, other)
    assert len(row) == len(quality.COLUMNS) and row[1] == "-" and row[6] == "-"


def test_sampling_pairs_parse_numbers_switches_and_names(quality):
    parsed = quality.parse_sampling(["cfg_scale=1.5", "top_k=null", "remove_smoothing_floor=false",
                                     "guidance_schedule=linear", "temperature=-0"])
    assert parsed == {"cfg_scale": 1.5, "top_k": None, "remove_smoothing_floor": False,
                      "guidance_schedule": "linear", "temperature": 0}
    with pytest.raises(SystemExit, match="key=value"):
        quality.parse_sampling(["cfg_scale"])


def test_reconstruct_uint8_batches_a_tokenizer_and_round_trips_its_pixels(quality):
    class Identity(torch.nn.Module):  # a lossless "tokenizer": the ceiling row would equal the real row
        calls = 0

        def reconstruct(self, images):
            Identity.calls += 1
            return images

    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = quality.reconstruct_uint8(Identity(), images, batch_size=2, seed=0, device=torch.device("cpu"))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, images) and Identity.calls == 3
