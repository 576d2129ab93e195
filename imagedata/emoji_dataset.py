"""The emoji dataset of ``python -m imagedata.prepare emoji`` as (image, subgroup class) pairs.

Every image is one emoji in one style, composited on white and resized (antialiased) to the model
resolution. Training jitters scale (``scale_jitter``: side x U(1-j, 1+j)) and position
(``shift_jitter``: up to that fraction of the side), never flips: a mirrored flag, arrow or letter
is another symbol. The draw is a function of (seed, epoch, index) alone, as for every file-backed
dataset (:meth:`~imagedata.skipping.SkippingImageDataset.set_augmentation_epoch`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from runkit.fileio import file_sha256
from runkit.images import uint8_to_tensor

from .emoji import SPLITS, read_emoji_manifest, split_of
from .skipping import SkippingImageDataset

PAD_FRACTION = 0.25   # white margin added around the canvas so that a shifted or shrunk box stays inside it


class EmojiDataset(SkippingImageDataset):
    """One split of a built emoji dataset: ``train``, ``val`` (held-out emoji) or ``test_style``.

    ``styles`` restricts the styles read (default: every style of the split). ``class_names`` are the
    manifest's classes (Unicode subgroups, small ones merged), the same list for every split.
    """

    background = 1.0   # white: emoji are composited on white

    def __init__(self, root: str | os.PathLike, split: str, image_size: int, train: bool, *,
                 styles: tuple[str, ...] | None = None, scale_jitter: float = 0.1, shift_jitter: float = 0.05):
        super().__init__(image_size, train, max_pixels=None, hflip=False)
        if split not in SPLITS:
            raise ValueError(f"emoji split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not (0.0 <= scale_jitter < 0.5 and 0.0 <= shift_jitter < PAD_FRACTION):
            raise ValueError(f"scale_jitter must be in [0, 0.5) and shift_jitter in [0, {PAD_FRACTION}), got "
                             f"{scale_jitter} and {shift_jitter}")
        self.root = Path(root)
        self.manifest = read_emoji_manifest(self.root)
        self.split = split
        self.scale_jitter = scale_jitter
        self.shift_jitter = shift_jitter
        self.class_names = [c["name"] for c in self.manifest["classes"]]
        self.samples = [(record, style) for record in self.manifest["emoji"] for style in record["styles"]
                        if split_of(record, style) == split and (styles is None or style in styles)]
        if not self.samples:
            raise ValueError(f"no emoji images in split {split!r} of {self.root} for styles {styles}")
        self.targets = [record["class"] for record, _ in self.samples]
        canvas = int(self.manifest["canvas_side"])
        self.pad = round(canvas * PAD_FRACTION)
        self.canvas = canvas
        self._share_bad_file_record()

    def __len__(self) -> int:
        return len(self.samples)

    def _describe(self, index: int) -> str:
        return str(self._read(index)[0])

    def describe(self, index: int) -> dict:
        """Name, codepoints, style and class of sample ``index`` (for grids and reports)."""
        record, style = self.samples[index]
        return {"name": record["name"], "text": record["text"], "key": record["key"], "style": style,
                "class": record["class"], "class_name": self.class_names[record["class"]]}

    def _read(self, index: int) -> tuple[Path, int]:
        record, style = self.samples[index]
        return self.root / style / f"{record['key']}.png", record["class"]

    def _box(self, index: int) -> tuple[float, float, float, float]:
        """The source box (left, top, right, bottom) in padded pixels: the canvas itself unless training."""
        generator = self._augmentation_generator(index)
        left = top = float(self.pad)
        side = float(self.canvas)
        if generator is not None:
            draws = torch.rand(3, generator=generator).tolist()
            scale = 1.0 + self.scale_jitter * (2.0 * draws[0] - 1.0)
            new_side = side / scale
            left += (side - new_side) / 2 + self.shift_jitter * side * (2.0 * draws[1] - 1.0)
            top += (side - new_side) / 2 + self.shift_jitter * side * (2.0 * draws[2] - 1.0)
            side = new_side
        limit = self.canvas + 2 * self.pad
        left = min(max(left, 0.0), limit - side)
        top = min(max(top, 0.0), limit - side)
        return left, top, left + side, top + side

    def _tensor(self, decoded: tuple[Image.Image, int], index: int) -> tuple[torch.Tensor, int]:
        """The decoded emoji (flattened on white by :func:`runkit.images.load_image`) on a white margin of
        ``pad`` pixels, its (jittered) box resized to the model resolution."""
        image, label = decoded
        padded = Image.new("RGB", (self.canvas + 2 * self.pad,) * 2, (255, 255, 255))
        padded.paste(image.resize((self.canvas, self.canvas), Image.LANCZOS) if image.size != (self.canvas,) * 2
                     else image, (self.pad, self.pad))
        resized = padded.resize((self.image_size, self.image_size), Image.LANCZOS, box=self._box(index))
        return uint8_to_tensor(np.asarray(resized).copy()), label

    def data_record(self) -> dict:
        """What a model trained on this split saw (written beside its weights as training_data.json)."""
        styles = {style: next(s for s in self.manifest["styles"] if s["name"] == style)
                  for style in sorted({style for _, style in self.samples})}
        keys = sorted({record["key"] for record, _ in self.samples})
        manifest_sha256 = file_sha256(self.root / "manifest.json")
        return {"dataset": "emoji", "root": str(self.root), "manifest_sha256": manifest_sha256,
                "split": self.split, "images": len(self.samples), "emoji": len(keys), "styles": styles,
                "classes": self.class_names, "background": self.manifest["background"],
                "augmentation": {"scale_jitter": self.scale_jitter, "shift_jitter": self.shift_jitter,
                                 "hflip": False},
                "data": self.manifest["data"], "emoji_keys": keys}
