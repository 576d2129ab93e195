"""Write the demo's example images into this folder: ``python app/examples/make_examples.py``.

- ``digit_<d>.png``: the first 3 and the first 7 of scikit-learn's ``load_digits()``, for the
  digits tokenizer.
- ``photo_<photo>.png``: a square cut at source resolution from the held-out validation band of
  a bundled photograph (:mod:`imagedata.scikit_photos`), for the photo tokenizer: pixels that no
  training crop of ``python -m imagedata.prepare_scikit_photos`` ever contains.

Deterministic (same packages, same bytes). Prints each photo example's box for the README.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from imagedata.scikit_photos import COLOUR_SOURCES, Box, RegionSplit, box_inside, side_range, split_regions

HERE = Path(__file__).resolve().parent
DIGITS = (3, 7)
# photo -> where along its val band the box sits (0: top/left end, 1: bottom/right end), picked
# by eye for something recognisable. Only photos with a clear licence (motorcycle has none).
PHOTOS = {"astronaut": 0.1, "china": 0.6, "hubble_deep_field": 0.5, "immunohistochemistry": 0.5,
          "retina": 0.2, "rocket": 1.0}
MIN_SIDE, MAX_SIDE = 96, 160  # big enough to look like a photo, small enough for a thumbnail
TRAIN_IMAGE_SIZE = 32  # the photo tokenizer's resolution (configs/tokenizer/photos32.yaml)


def write_digits() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in DIGITS:
        i = int(np.flatnonzero(digits.target == label)[0])
        pixels = (digits.images[i] / 16 * 255).round().astype(np.uint8)
        Image.fromarray(pixels, "L").resize((64, 64), Image.BILINEAR).save(HERE / f"digit_{label}.png",
                                                                            optimize=True)


def band_box(split: RegionSplit, position: float) -> Box:
    """A square inside the val band, centred across it, ``position`` of the way along it.

    Its side is the largest training crop side for this photo (so the tokenizer sees the scale it
    was trained on), kept within [MIN_SIDE, MAX_SIDE] and the band's width.
    """
    left, top, right, bottom = split.val
    across = right - left if split.axis == "x" else bottom - top
    side = min(max(side_range(split, TRAIN_IMAGE_SIZE)[1], MIN_SIDE), MAX_SIDE, across)
    offset = (across - side) // 2
    if split.axis == "x":
        x, y = left + offset, top + round((bottom - top - side) * position)
    else:
        x, y = left + round((right - left - side) * position), top + offset
    box = (x, y, x + side, y + side)
    assert box_inside(box, split.val), (box, split.val)
    return box


def write_photos() -> None:
    sources = {source.name: source for source in COLOUR_SOURCES}
    for name, position in PHOTOS.items():
        source = sources[name]
        photo = Image.open(source.path).convert("RGB")
        box = band_box(split_regions(*photo.size), position)
        photo.crop(box).save(HERE / f"photo_{name}.png", optimize=True)
        print(f"| `photo_{name}.png` | {source.title}, box {box} of {photo.width}×{photo.height}; "
              f"{source.origin} | {source.licence} |")


if __name__ == "__main__":
    write_digits()
    write_photos()
