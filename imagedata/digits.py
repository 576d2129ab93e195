"""scikit-learn's handwritten digits, generated in memory at any size with a fixed split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS_VAL_SIZE = 297
DIGITS_SPLIT_SEED = 0


class DigitsDataset(Dataset):
    """scikit-learn's 8×8 digits (1797 images, 10 classes) upscaled to ``image_size``.

    A fixed stratified split (297 validation images, seed 0). Pixels 0..16 map to [-1, 1]
    (0 = background = -1); upscaling is bilinear with antialiasing, grey replicated to RGB.
    No crops or flips (a flipped digit is another symbol), so ``train`` changes nothing.
    """

    background = -1.0  # black: what jitter (imagedata.random_affine) fills uncovered pixels with
    skipped = 0  # generated in memory: nothing is ever unreadable
    skipped_files: list[str] = []

    def __init__(self, split: str, image_size: int, train: bool = False):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if split not in ("train", "val"):
            raise ValueError(f"digits split must be 'train' or 'val', got {split!r}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        digits = load_digits()
        train_ids, val_ids = train_test_split(
            list(range(len(digits.target))),
            test_size=DIGITS_VAL_SIZE,
            random_state=DIGITS_SPLIT_SEED,
            stratify=digits.target,
        )
        ids = torch.tensor(sorted(train_ids if split == "train" else val_ids))
        self.split = split
        self.image_size = image_size
        self.train = train
        self.indices = ids
        self.pixels = torch.as_tensor(digits.images, dtype=torch.float32)[ids] / 8.0 - 1.0
        self.targets = torch.as_tensor(digits.target, dtype=torch.int64)[ids]

    @property
    def class_names(self) -> list[str]:
        return list(DIGIT_NAMES)

    @property
    def num_classes(self) -> int:
        return len(DIGIT_NAMES)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.pixels[index][None, None]
        if self.image_size != 8:
            image = F.interpolate(
                image, size=(self.image_size, self.image_size), mode="bilinear",
                align_corners=False, antialias=True,
            )
        return image[0].clamp(-1.0, 1.0).expand(3, -1, -1).contiguous(), int(self.targets[index])

    def exact_item(self, index: int) -> tuple[torch.Tensor, int]:
        return self[index]
