"""Write the demo's example images into this folder: ``python app/examples/make_examples.py``.

- ``digit_<d>.png``: the first 3 and the first 7 of scikit-learn's ``load_digits()``, for the
  digits tokenizer.
- ``photo_<name>.png``: a square cut at source resolution from a photograph of the photo corpus's
  unseen package (``test_unseen``, opencv-doc's sample pictures; ``python -m imagedata.prepare
  photos`` builds it), for the photo tokenizer: a source no shipped model was trained, tuned or
  selected on.

Deterministic (same packages, same bytes). Prints each photo example's row for the README.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from imagedata.photo_corpus import DEFAULT_UNSEEN, read_manifest

HERE = Path(__file__).resolve().parent
DIGITS = (3, 7)
# name -> (file of the unseen package, under the corpus's test_unseen/<package>/; box (left, top, right,
# bottom) in source pixels, picked by eye for something recognisable at 32 px: 0.55-0.9 of the short side).
# Only pictures that show no person and no third-party artwork.
PHOTOS = {
    "fruits": ("data/fruits.jpg", (70, 60, 330, 320)),
    "apple": ("data/apple.jpg", (40, 30, 470, 460)),
    "squirrel": ("data/squirrel_cls.jpg", (110, 110, 370, 370)),
    "butterfly": ("data/butterfly.jpg", (96, 40, 396, 340)),
    "building": ("data/building.jpg", (250, 150, 650, 550)),
    "plant": ("alphamat/input_images/plant.jpg", (180, 20, 480, 320)),
}


def write_digits() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in DIGITS:
        i = int(np.flatnonzero(digits.target == label)[0])
        pixels = (digits.images[i] / 16 * 255).round().astype(np.uint8)
        Image.fromarray(pixels, "L").resize((64, 64), Image.BILINEAR).save(HERE / f"digit_{label}.png",
                                                                            optimize=True)


def source_file(corpus: Path, name: str) -> Path:
    return corpus / "test_unseen" / DEFAULT_UNSEEN / PHOTOS[name][0]


def write_photos(corpus: Path) -> None:
    manifest = read_manifest(corpus)
    if manifest is None:
        raise SystemExit(f"{corpus} is not a photo corpus: build it with python -m imagedata.prepare photos")
    records = {record["file"]: record for record in manifest["files"]}
    for name, (file, box) in PHOTOS.items():
        path = source_file(corpus, name)
        record = records[path.relative_to(corpus).as_posix()]
        assert record["split"] == "test_unseen" and hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
        photo = Image.open(path).convert("RGB")
        photo.crop(box).save(HERE / f"photo_{name}.png", optimize=True)
        print(f"| `photo_{name}.png` | `{record['path']}` ({record['package']} {record['version']}), box {box} of "
              f"{photo.width}×{photo.height} | {record['licence']} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/photo_corpus"))
    write_digits()
    write_photos(parser.parse_args().corpus)
