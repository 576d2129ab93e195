"""The digits dataset's own 8×8 space (evaluation.digit_space) and near duplicates measured there.

Issue 26: at 32 px the decoder's pixel texture made collapsed samples look varied; mapped back to
8×8 they do not. These tests check that the inverse mapping undoes the dataset's upscaling, that
the independent classifier recognises real digits and not wrong labels, and that texture which
hides a collapse at 32 px does not hide it in 8×8.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.digit_space import (DIGIT_MAX, digit_space_accuracy, held_out_accuracy, raw_digits, to_digit_space,
                                    upsampling_matrix)
from generator.memorization import near_duplicates_beside_real, thumbnails
from imagedata import DigitsDataset, stack_dataset
from runkit.images import tensor_to_uint8


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    return tensor_to_uint8(images).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def val32() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = stack_dataset(DigitsDataset("val", 32))
    return as_uint8(images), labels.long()


@pytest.mark.parametrize("size", [8, 16, 32])
def test_upsampling_matrix_is_the_datasets_upscaling(size):
    images, _ = stack_dataset(DigitsDataset("val", size))
    raw, _ = raw_digits("val")
    upscaled = torch.from_numpy(raw[:20]) @ upsampling_matrix(size).T  # 0..16 ink at `size` px
    torch.testing.assert_close(upscaled / (DIGIT_MAX / 2) - 1, images[:20, 0].flatten(1).double(),
                               atol=1e-5, rtol=0)


def test_to_digit_space_recovers_the_raw_digits(val32):
    images, labels = val32
    raw, raw_labels = raw_digits("val")
    assert np.array_equal(raw_labels, labels.numpy())
    assert raw.min() == 0 and raw.max() == DIGIT_MAX and np.array_equal(raw, raw.round())
    recovered = to_digit_space(images)
    assert recovered.shape == (len(images), 64)
    assert float((recovered - torch.from_numpy(raw)).abs().max()) < 0.1  # uint8 rounding of the 32-px image only
    # The 16-px images of the same digits map to the same 8×8 digits.
    sixteen = as_uint8(stack_dataset(DigitsDataset("val", 16))[0])
    assert float((to_digit_space(sixteen) - recovered).abs().max()) < 0.2


def test_to_digit_space_averages_channels_and_clamps():
    grey = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    torch.testing.assert_close(to_digit_space(grey), torch.full((1, 64), DIGIT_MAX, dtype=torch.float64))
    tinted = grey.clone()
    tinted[:, 0] = 0  # red off: two thirds of the ink
    torch.testing.assert_close(to_digit_space(tinted), torch.full((1, 64), DIGIT_MAX * 2 / 3, dtype=torch.float64))
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 255).to(torch.uint8).expand(1, 3, 32, 32)
    assert float(to_digit_space(checker.contiguous()).min()) >= 0.0  # no negative ink


@pytest.mark.parametrize("images, message", [
    (torch.zeros(2, 3, 32, 32), "uint8"),
    (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), "uint8"),
    (torch.zeros(2, 3, 32, 16, dtype=torch.uint8), "square"),
    (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "size must be an int >= 8"),
])
def test_bad_images_are_a_clear_error(images, message):
    with pytest.raises(ValueError, match=message):
        to_digit_space(images)


def test_classifier_recognises_held_out_digits_not_wrong_labels(val32):
    images, labels = val32
    assert held_out_accuracy() > 0.97  # trained on the train split only: these digits are new to it
    assert digit_space_accuracy(images, labels) == pytest.approx(held_out_accuracy(), abs=0.01)
    assert digit_space_accuracy(images, (labels + 1) % 10) < 0.05
    blank = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
    assert digit_space_accuracy(blank, torch.arange(20) % 10) <= 0.1  # one class at most
    with pytest.raises(ValueError, match="as many labels"):
        digit_space_accuracy(images, labels[:-1])


def test_texture_hides_a_collapse_at_32_px_but_not_in_8x8():
    images, labels = stack_dataset(DigitsDataset("train", 32))
    real = as_uint8(images)
    # 20 copies of one digit per class, each under its own pixel noise (the decoder's texture stands in).
    base = torch.cat([images[labels == c][:1].repeat(20, 1, 1, 1) for c in range(10)])
    noise = 0.3 * torch.randn(len(base), 1, 32, 32, generator=torch.Generator().manual_seed(0))
    collapsed, collapsed_labels = as_uint8((base + noise).clamp(-1, 1)), torch.arange(10).repeat_interleave(20)
    at_32 = near_duplicates_beside_real(thumbnails(collapsed), collapsed_labels, thumbnails(real), labels)
    in_8x8 = near_duplicates_beside_real(to_digit_space(collapsed), collapsed_labels, to_digit_space(real), labels)
    assert at_32["near_duplicate_rate"] < at_32["near_duplicate_rate_real"]  # looks more varied than real digits
    assert in_8x8["near_duplicate_rate"] == 1.0 > 2 * in_8x8["near_duplicate_rate_real"]
    # Real digits drawn apart from the baseline's draws sit at the baseline.
    pick = torch.cat([(labels == c).nonzero().flatten()[-20:] for c in range(10)])
    held = near_duplicates_beside_real(to_digit_space(real[pick]), labels[pick], to_digit_space(real), labels)
    assert held["near_duplicate_rate"] < 1.6 * held["near_duplicate_rate_real"]
