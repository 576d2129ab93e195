"""The digits dataset's own space: 8×8 pixels in 0..16, and a classifier that lives there.

The project's digits are scikit-learn's 8×8 images upscaled bilinearly to the model resolution
(:class:`imagedata.DigitsDataset`). Compared at 32 px, two samples that draw the same digit still
differ by the decoder's pixel texture, which real (upscaled) digits do not have, so samples look
more varied than they are. Mapping every image back to 8×8 (the least-squares inverse of that
upscaling) compares samples and real digits by what the dataset itself can express.

The classifier here is scikit-learn's RBF support-vector machine fitted on the raw 8×8 training
digits of the project's split: nothing of the project (no tokenizer, generator or metric
network) is involved in it, so a generator cannot have been tuned against it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DIGIT_SIDE = 8
DIGIT_MAX = 16.0  # scikit-learn's digits count 0..16 ink per pixel
SVM_C = 10.0  # held-out accuracy 0.993 on the 297 val digits (C=1: 0.987; logistic regression: 0.960)


@functools.lru_cache(maxsize=8)
def upsampling_matrix(size: int) -> Tensor:
    """The linear map (size*size, 64) from an 8×8 digit to its ``size``-px image, as imagedata.digits makes it.

    Column j is pixel j of the 8×8 basis pushed through the same interpolation call; the map is
    affine-free because bilinear weights sum to 1, so [-1, 1] and 0..16 scalings commute with it.
    """
    if not isinstance(size, int) or size < DIGIT_SIDE:
        raise ValueError(f"digit images are upscaled from {DIGIT_SIDE} px: size must be an int >= {DIGIT_SIDE}, "
                         f"got {size!r}")
    basis = torch.eye(DIGIT_SIDE * DIGIT_SIDE, dtype=torch.float64).reshape(-1, 1, DIGIT_SIDE, DIGIT_SIDE)
    if size == DIGIT_SIDE:
        return basis.flatten(1).T.contiguous()
    images = F.interpolate(basis, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return images.flatten(1).T.contiguous()


@functools.lru_cache(maxsize=8)
def _downsampling_matrix(size: int) -> Tensor:
    return torch.linalg.pinv(upsampling_matrix(size))  # (64, size*size): least squares, exact on upscaled digits


def to_digit_space(images: Tensor) -> Tensor:
    """uint8 images (N,3,S,S) -> float64 (N, 64) 8×8 digits in [0, 16], the inverse of the dataset's upscaling.

    Channels are averaged (digits are grey replicated to RGB); what the upscaling cannot produce
    (decoder texture, uint8 rounding) is projected away. A real digit comes back to within the
    uint8 rounding of its 32-px image (< 0.1 of 16).
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square uint8 (N,3,S,S) images, got {images.dtype} {tuple(images.shape)}")
    grey = images.double().mean(dim=1).flatten(1) * (DIGIT_MAX / 255.0)  # uint8 0..255 is 0..16 ink
    return (grey @ _downsampling_matrix(images.shape[-1]).T).clamp(0.0, DIGIT_MAX)


def raw_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits of the project's ``split`` ('train' | 'val'): (N, 64) in 0..16, labels (N,)."""
    from imagedata import DigitsDataset

    dataset = DigitsDataset(split, DIGIT_SIDE)  # size 8: no interpolation, the raw pixels
    pixels = ((dataset.pixels + 1.0) * (DIGIT_MAX / 2)).round()  # the dataset's v / 8 - 1, undone exactly
    return pixels.flatten(1).double().numpy(), dataset.targets.numpy()


@functools.lru_cache(maxsize=1)
def digit_classifier():
    """An RBF SVM fitted on the raw 8×8 training digits (deterministic; about 0.1 s)."""
    from sklearn.svm import SVC

    features, labels = raw_digits("train")
    return SVC(C=SVM_C).fit(features, labels)


def digit_space_accuracy(images: Tensor, labels: Tensor) -> float:
    """Share of uint8 (N,3,S,S) images that :func:`digit_classifier` puts in their ``labels`` class."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many labels as images (and at least one), got {len(labels)} for {len(images)}")
    predicted = digit_classifier().predict(to_digit_space(images).numpy())
    return float((predicted == np.asarray(labels)).mean())


def held_out_accuracy() -> float:
    """:func:`digit_classifier`'s accuracy on the raw 8×8 val digits."""
    features, labels = raw_digits("val")
    return float((digit_classifier().predict(features) == labels).mean())
