"""The emoji dataset: parsing Unicode's lists, classes, splits, glyph fitting and the dataset reader,
on small fixtures (nothing is downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from imagedata import EmojiDataset, build_dataset
from imagedata.emoji import (CANVAS_SIDE, GLYPH_SIDE, EmojiEntry, assign_classes, check_not_reserved, fit_glyph,
                             heldout_emoji, parse_cldr_annotations, parse_emoji_test, split_of)

EMOJI_TEST = """\
# group: Smileys & Emotion

# subgroup: face-smiling
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face
263A FE0F                                              ; fully-qualified     # ☺️ E0.6 smiling face
263A                                                   ; unqualified         # ☺ E0.6 smiling face

# group: People & Body

# subgroup: hand-fingers-open
1F44B                                                  ; fully-qualified     # 👋 E0.6 waving hand
1F44B 1F3FB                                            ; fully-qualified     # 👋🏻 E1.0 waving hand: light skin tone

# group: Component

# subgroup: skin-tone
1F3FB                                                  ; component           # 🏻 E1.0 light skin tone
1F9B0                                                  ; fully-qualified     # 🦰 E11.0 red hair

# group: Animals & Nature

# subgroup: animal-mammal
1F408                                                  ; fully-qualified     # 🐈 E0.7 cat
1F415                                                  ; fully-qualified     # 🐕 E0.7 dog
# subgroup: animal-bird
1F426                                                  ; fully-qualified     # 🐦 E0.6 bird
# subgroup: animal-bug
1F41B                                                  ; fully-qualified     # 🐛 E0.6 bug
"""


def entry(subgroup: str, group: str = "g", codepoint: int = 0x1F600) -> EmojiEntry:
    return EmojiEntry((codepoint,), subgroup, group, subgroup)


def test_parse_keeps_fully_qualified_without_skin_tones_or_components():
    entries = parse_emoji_test(EMOJI_TEST)
    assert [e.name for e in entries] == ["grinning face", "smiling face", "waving hand", "cat", "dog", "bird", "bug"]
    smiling = entries[1]
    assert smiling.codepoints == (0x263A, 0xFE0F) and smiling.key == "263a-fe0f" and smiling.match_key == "263a"
    assert (entries[3].group, entries[3].subgroup) == ("Animals & Nature", "animal-mammal")


def test_parse_rejects_a_file_without_emoji():
    with pytest.raises(ValueError, match="emoji-test.txt"):
        parse_emoji_test("# just a comment\n")


def test_cldr_keywords_skip_text_to_speech_names():
    xml = ('<ldml><annotations><annotation cp="🐈">cat | pet</annotation>'
           '<annotation cp="🐈" type="tts">cat</annotation>'
           '<annotation cp="☺️">face | smile</annotation></annotations></ldml>')
    assert parse_cldr_annotations(xml) == {"🐈": ["cat", "pet"], "☺": ["face", "smile"]}


def test_small_subgroups_merge_within_their_group_only():
    entries = ([entry("big", "A")] * 12 + [entry("tiny", "A")] * 2 + [entry("small", "A")] * 5
               + [entry("alone", "B")] * 3)
    classes = assign_classes(entries, min_size=10)
    # tiny (2) joins the next-smallest class of group A (small, 5): 7 is still < 10, so it joins big.
    assert classes["tiny"] == classes["small"] == classes["big"] == "big+tiny+small"
    assert classes["alone"] == "alone"        # a group's only class stays, however small


def test_classes_at_least_min_size_when_a_group_allows():
    entries = [entry(f"s{i}", "A") for i in range(7) for _ in range(i + 1)]
    classes = assign_classes(entries, min_size=6)
    sizes: dict[str, int] = {}
    for item in entries:
        sizes[classes[item.subgroup]] = sizes.get(classes[item.subgroup], 0) + 1
    assert min(sizes.values()) >= 6 and sum(sizes.values()) == len(entries)


def test_heldout_emoji_are_about_the_stated_fraction_and_stable():
    entries = [entry("s", codepoint=0x1F000 + i) for i in range(2000)]
    held = [heldout_emoji(e) for e in entries]
    assert 0.07 < np.mean(held) < 0.13
    assert held == [heldout_emoji(e) for e in entries]
    # a held-out codepoint is held out in every training style; the held-out style is its own split
    record = {"heldout": True}
    assert {split_of(record, s) for s in ("noto", "twemoji")} == {"val"} and split_of(record, "openmoji") == "test_style"


def test_fit_glyph_centres_the_alpha_box_at_the_glyph_side():
    image = Image.new("RGBA", (100, 60), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (10, 20, 50, 40))         # a 40 x 20 red box
    fitted = fit_glyph(image)
    assert fitted.size == (CANVAS_SIDE, CANVAS_SIDE)
    left, top, right, bottom = fitted.getchannel("A").point(lambda a: 255 if a > 128 else 0).getbbox()
    assert right - left == GLYPH_SIDE and abs((bottom - top) - GLYPH_SIDE // 2) <= 1
    assert abs((left + right) / 2 - CANVAS_SIDE / 2) <= 1 and abs((top + bottom) / 2 - CANVAS_SIDE / 2) <= 1
    assert fit_glyph(Image.new("RGBA", (10, 10), (0, 0, 0, 0))) is None


def test_fluent_packages_are_refused():
    with pytest.raises(ValueError, match="reserved"):
        check_not_reserved("@fluentui/emoji")
    check_not_reserved("emoji-datasource-twitter")


def _fake_dataset(root, keys_per_class=3):
    """A built dataset in miniature: 2 classes x keys_per_class emoji, noto + twemoji + openmoji."""
    records = []
    colours = {"noto": (255, 200, 0, 255), "twemoji": (0, 120, 255, 255), "openmoji": (30, 160, 60, 255)}
    for style in colours:
        (root / style).mkdir(parents=True)
    for cls in range(2):
        for k in range(keys_per_class):
            key = f"1f{cls}{k:02x}"
            for style, colour in colours.items():
                glyph = Image.new("RGBA", (40, 40 - 10 * cls), (0, 0, 0, 0))
                glyph.paste(colour, (0, 0, 40, 40 - 10 * cls))
                fit_glyph(glyph).save(root / style / f"{key}.png")
            records.append({"key": key, "text": "x", "name": f"emoji {cls}-{k}", "group": "g", "subgroup": f"s{cls}",
                            "class": cls, "heldout": k == 0, "styles": list(colours), "keywords": []})
    manifest = {"canvas_side": CANVAS_SIDE, "background": "white", "emoji": records, "data": [],
                "classes": [{"id": i, "name": f"s{i}"} for i in range(2)],
                "styles": [{"name": s, "licence": "test"} for s in colours]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_dataset_splits_by_emoji_and_by_style(tmp_path):
    root = _fake_dataset(tmp_path / "emoji")
    train = EmojiDataset(root, "train", 16, train=False)
    val = EmojiDataset(root, "val", 16, train=False)
    style = EmojiDataset(root, "test_style", 16, train=False)
    assert (len(train), len(val), len(style)) == (8, 4, 6)
    assert not {train.describe(i)["key"] for i in range(len(train))} & {val.describe(i)["key"] for i in range(len(val))}
    assert {style.describe(i)["style"] for i in range(len(style))} == {"openmoji"}
    assert train.class_names == ["s0", "s1"] and sorted(set(train.targets)) == [0, 1]
    assert len(EmojiDataset(root, "train", 16, train=False, styles=("noto",))) == 4


def test_dataset_images_are_on_white_with_the_glyph_in_colour(tmp_path):
    root = _fake_dataset(tmp_path / "emoji")
    dataset = EmojiDataset(root, "test_style", 32, train=False)
    image, label = dataset.exact_item(0)
    assert image.shape == (3, 32, 32) and label == 0
    assert torch.allclose(image[:, 0, 0], torch.ones(3))           # corner: white background
    centre = (image[:, 16, 16] + 1) * 127.5
    assert torch.allclose(centre, torch.tensor([30.0, 160.0, 60.0]), atol=2)   # the openmoji fixture colour


def test_training_jitter_moves_the_glyph_and_is_reproducible(tmp_path):
    root = _fake_dataset(tmp_path / "emoji")
    dataset = EmojiDataset(root, "train", 32, train=True, scale_jitter=0.2, shift_jitter=0.2)
    exact = EmojiDataset(root, "train", 32, train=False)[0][0]
    dataset.set_augmentation_epoch(0, 1)
    first = dataset[0][0]
    dataset.set_augmentation_epoch(0, 2)
    second = dataset[0][0]
    dataset.set_augmentation_epoch(0, 1)
    assert torch.equal(first, dataset[0][0])
    assert not torch.allclose(first, exact) and not torch.allclose(first, second)


def test_build_dataset_reads_the_emoji_config(tmp_path):
    root = _fake_dataset(tmp_path / "emoji")
    config = {"name": "emoji", "root": str(root), "train_split": "train", "val_split": "test_style",
              "scale_jitter": 0.1, "shift_jitter": 0.05, "styles": None}
    assert len(build_dataset(config, "val", 16, train=False)) == 6
    assert build_dataset(config, "train", 16, train=True).data_record()["augmentation"]["hflip"] is False


def test_clear_errors_for_a_missing_dataset_or_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m imagedata.prepare emoji"):
        EmojiDataset(tmp_path, "train", 32, train=False)
    root = _fake_dataset(tmp_path / "emoji")
    with pytest.raises(ValueError, match="emoji split must be one of"):
        EmojiDataset(root, "unseen", 32, train=False)


def test_an_unreadable_image_is_skipped_with_a_warning(tmp_path):
    root = _fake_dataset(tmp_path / "emoji")
    dataset = EmojiDataset(root, "test_style", 16, train=False)
    (root / "openmoji" / f"{dataset.describe(0)['key']}.png").write_bytes(b"not a png")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert dataset.exact_item(0) is None
    assert dataset.skipped == 1 and dataset[0][0].shape == (3, 16, 16)


def test_jitter_fills_uncovered_pixels_with_the_dataset_background():
    from imagedata import DigitsDataset, random_affine

    white = torch.ones(4, 3, 16, 16)
    moved = random_affine(white, torch.Generator().manual_seed(0), max_degrees=20, max_shift=0.2,
                          fill=EmojiDataset.background)
    assert torch.allclose(moved, white, atol=1e-5)
    black_border = random_affine(white, torch.Generator().manual_seed(0), max_degrees=20, max_shift=0.2,
                                 fill=DigitsDataset.background)
    assert black_border.min() < -0.9
