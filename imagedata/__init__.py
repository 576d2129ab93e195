"""Image data for every stage: datasets (image folders, the ImageNet tar + JSON index, sklearn
digits), resumable sampling, augmentation, subsets, and the offline photo sources.

The tokenizer, the generator, evaluation and the demo all read data through this package. Every
dataset yields ``(image (3,S,S) float in [-1,1], label int)`` and exposes ``class_names``,
``num_classes``, ``skipped``, ``skipped_files``, ``background`` (the pixel value jitter fills with:
-1 black, +1 white for emoji) and ``len``; file-backed ones skip unreadable files
(:mod:`.skipping`). The helpers live in their own modules (:mod:`.augment`, :mod:`.subsets`,
:mod:`.digits`, :mod:`.scikit_photos`).
"""

from .augment import background_of, random_affine
from .build import build_dataset
from .digits import DIGIT_NAMES, DigitsDataset
from .emoji_dataset import EmojiDataset
from .folder import IMAGE_EXTENSIONS, ImageFolderDataset
from .imagenet_tar import ImageNetTarDataset, synset_of, write_tar_index
from .sampling import ResumableSampler, infinite_batches
from .subsets import SubsetDataset, stack_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "ImageNetTarDataset",
    "DigitsDataset",
    "EmojiDataset",
    "SubsetDataset",
    "stack_dataset",
    "random_affine",
    "background_of",
    "DIGIT_NAMES",
    "build_dataset",
    "write_tar_index",
    "synset_of",
    "ResumableSampler",
    "infinite_batches",
]
