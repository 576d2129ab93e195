"""Datasets (image folders, the ImageNet tar + JSON index, sklearn digits) and resumable sampling.

Every dataset yields ``(image (3,S,S) float in [-1,1], label int)`` and exposes
``class_names``, ``num_classes``, ``skipped``, ``skipped_files`` and ``len``; file-backed ones
skip unreadable files (:mod:`.skipping`). This package's face is what training, evaluation and
the generator build datasets and batches with; the helpers live in their own modules
(:mod:`.augment`, :mod:`.subsets`, :mod:`.digits`).
"""

from .build import build_dataset
from .digits import DigitsDataset
from .folder import IMAGE_EXTENSIONS, ImageFolderDataset
from .imagenet_tar import ImageNetTarDataset, synset_of, write_tar_index
from .sampling import ResumableSampler, infinite_batches
from .subsets import SubsetDataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "ImageNetTarDataset",
    "DigitsDataset",
    "SubsetDataset",
    "build_dataset",
    "write_tar_index",
    "synset_of",
    "ResumableSampler",
    "infinite_batches",
]
