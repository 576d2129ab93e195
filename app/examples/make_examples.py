"""Write the demo's example images into this folder: ``python app/examples/make_examples.py``.

- ``digit_<d>.png``: the first 3 and the first 7 of scikit-learn's ``load_digits()``, for the
  digits tokenizer.
- ``photo_<name>.png``: a square cut at source resolution from a photograph of the photo corpus's
  unseen package (``test_unseen``, opencv-doc's sample pictures; ``python -m imagedata.prepare
  photos`` builds it), for the photo tokenizer: a source no shipped model was trained, tuned or
  selected on.
- ``emoji_<name>.png``: one emoji of the emoji dataset (``python -m imagedata.prepare emoji``) as the
  emoji tokenizer sees it, composited on white at the dataset's canvas size, from its held-out
  images only: the ``val`` split (held-out emoji of the training styles Noto and Twemoji) or the
  ``test_style`` split (the held-out style, OpenMoji). No training image is used.

Deterministic (same packages, same bytes). Prints each photo and emoji example's row for the README.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image

if __name__ == "__main__":  # run as a script: the project's packages are beside app/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from imagedata.emoji import read_emoji_manifest, split_of
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

# name -> (style, emoji key = the file stem under data/emoji/<style>/): held-out splits only (EMOJI_SPLITS),
# matching the demo's example prompts where a held-out image exists (cat, pizza, heart, flag, rocket).
EMOJI = {
    "cat": ("noto", "1f63a"),  # grinning cat, val
    "pizza": ("twemoji", "1f355"),  # pizza, val
    "heart": ("noto", "1f496"),  # sparkling heart, val
    "flag": ("twemoji", "1f1e8-1f1ed"),  # flag: Switzerland, val
    "tiger": ("twemoji", "1f42f"),  # tiger face, val
    "rocket": ("openmoji", "1f680"),  # rocket, test_style (the style no model trains on)
}
EMOJI_SPLITS = ("val", "test_style")


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


def emoji_record(manifest: dict, name: str) -> tuple[dict, dict]:
    """(the manifest's emoji record, its style record) of example ``name``, checked to be held out."""
    style, key = EMOJI[name]
    record = next(r for r in manifest["emoji"] if r["key"] == key)
    split = split_of(record, style)
    if split not in EMOJI_SPLITS or style not in record["styles"]:
        raise ValueError(f"emoji example {name!r} ({style} {key}) is in split {split!r}: only {EMOJI_SPLITS} "
                         "may be used")
    return record, next(s for s in manifest["styles"] if s["name"] == style)


def emoji_on_white(root: Path, name: str, canvas: int) -> Image.Image:
    """The example's image as the dataset composites it (imagedata.emoji_dataset): RGBA on white, canvas size."""
    style, key = EMOJI[name]
    with Image.open(root / style / f"{key}.png") as image:
        rgba = image.convert("RGBA")
    if rgba.size != (canvas, canvas):
        rgba = rgba.resize((canvas, canvas), Image.LANCZOS)
    white = Image.new("RGBA", (canvas, canvas), (255, 255, 255, 255))
    white.alpha_composite(rgba)
    return white.convert("RGB")


def write_emoji(root: Path) -> None:
    try:
        manifest = read_emoji_manifest(root)
    except (OSError, ValueError) as error:
        raise SystemExit(f"{root} is not an emoji dataset ({error}): build it with python -m imagedata.prepare emoji")
    for name in EMOJI:
        record, style = emoji_record(manifest, name)
        emoji_on_white(root, name, int(manifest["canvas_side"])).save(HERE / f"emoji_{name}.png", optimize=True)
        print(f"| `emoji_{name}.png` | {record['text']} {record['name']} (`{style['name']}/{record['key']}.png`, "
              f"split `{split_of(record, style['name'])}`, class `{manifest['classes'][record['class']]['name']}`) "
              f"| {style['package']} {style['version']} ({style['registry']}) | {style['licence']} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/photo_corpus"))
    parser.add_argument("--emoji", type=Path, default=Path("data/emoji"))
    parser.add_argument("--only", choices=("digits", "photos", "emoji"), default=None,
                        help="write one kind of example only (default: all)")
    args = parser.parse_args()
    if args.only in (None, "digits"):
        write_digits()
    if args.only in (None, "photos"):
        write_photos(args.corpus)
    if args.only in (None, "emoji"):
        write_emoji(args.emoji)
