"""Bundled photographs cut into an ImageFolder: region split, determinism, loading, refusals."""

import json
import time

import numpy as np
import pytest
from PIL import Image

from imagedata import ImageFolderDataset
from imagedata.scikit_photos import (
    COLOUR_SOURCES,
    GREY_SOURCES,
    box_inside,
    boxes_intersect,
    crop_rng,
    photo_sources,
    sample_box,
    sample_crops,
    side_range,
    split_regions,
)
from imagedata.prepare_scikit_photos import prepare_photos, read_manifest

SMALL = {"image_size": 32, "train_crops": 6, "val_crops": 3, "seed": 0}


def _quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("photos") / "photos"
    manifest = prepare_photos(out, **SMALL, log=_quiet)
    return out, manifest


@pytest.mark.parametrize("size", [(512, 512), (451, 300), (550, 660), (1411, 1411), (741, 500), (60, 200)])
def test_sampled_train_boxes_never_touch_the_val_band(size):
    split = split_regions(*size)
    low, high = side_range(split, 32)
    assert 1 <= low <= high
    # The band is on the longer side's far edge; train region + gap + band tile that side.
    if split.axis == "x":
        assert size[0] >= size[1] and split.val[2] == size[0] and split.val[1:4:2] == (0, size[1])
        assert split.train[2] + split.gap == split.val[0]
    else:
        assert size[1] > size[0] and split.val[3] == size[1] and split.val[0:3:2] == (0, size[0])
        assert split.train[3] + split.gap == split.val[1]
    assert not boxes_intersect(split.train, split.val)
    rng = np.random.default_rng(1)
    for _ in range(3000):
        box = sample_box(rng, split.train, low, high)
        assert box_inside(box, split.train) and not boxes_intersect(box, split.val)
        assert box[2] - box[0] == box[3] - box[1]
        val_box = sample_box(rng, split.val, low, high)
        assert box_inside(val_box, split.val)
    # Even a caller asking for boxes larger than the region gets one that stays inside.
    for _ in range(200):
        assert box_inside(sample_box(rng, split.train, 1, 10 * max(size)), split.train)


def test_boxes_intersect_is_pixel_exact():
    assert boxes_intersect((0, 0, 10, 10), (9, 9, 20, 20))
    assert not boxes_intersect((0, 0, 10, 10), (10, 0, 20, 10))  # touching edges share no pixel
    assert not boxes_intersect((0, 0, 10, 10), (0, 10, 10, 20))


def test_sample_crops_draws_from_the_right_region_at_the_right_size():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 451, 3), dtype=np.uint8))
    split = split_regions(*photo.size)
    for which, region in (("train", split.train), ("val", split.val)):
        crops = sample_crops(photo, split, which, 25, 32, crop_rng(0, "x", which))
        assert len(crops) == 25
        for box, crop in crops:
            assert box_inside(box, region) and crop.size == (32, 32) and crop.mode == "RGB"
    # A val band with room keeps its boxes apart.
    val_boxes = [box for box, _ in sample_crops(photo, split, "val", 3, 32, crop_rng(0, "x", "val"))]
    assert not any(boxes_intersect(a, b) for i, a in enumerate(val_boxes) for b in val_boxes[i + 1:])


def test_sources_are_installed_real_photos_and_skip_the_right_stereo_view():
    names = [source.name for source in photo_sources()]
    assert len(names) == len(set(names)) == 10
    assert all(source.colour for source in COLOUR_SOURCES) and not any(s.colour for s in GREY_SOURCES)
    assert [s.name for s in photo_sources(include_grey=True)] == names + [s.name for s in GREY_SOURCES]
    for source in photo_sources(include_grey=True):
        assert source.path.is_file(), source
        assert "motorcycle_right" not in source.file
        assert source.origin and source.licence


def test_manifest_geometry_keeps_every_train_box_out_of_the_val_band(prepared):
    out, manifest = prepared
    assert read_manifest(out) == manifest
    sources = {record["name"]: record for record in manifest["sources"]}
    assert sorted(sources) == sorted(source.name for source in photo_sources())
    counts = {}
    for crop in manifest["crops"]:
        record = sources[crop["source"]]
        box, band, train = tuple(crop["box"]), tuple(record["val_band"]), tuple(record["train_region"])
        assert box[2] - box[0] == box[3] - box[1] == crop["side"]
        assert crop["scale"] == pytest.approx(crop["side"] / min(record["width"], record["height"]), abs=1e-6)
        assert box_inside(box, (0, 0, record["width"], record["height"]))
        if crop["split"] == "train":
            assert not boxes_intersect(box, band) and box_inside(box, train), crop
        else:
            assert box_inside(box, band), crop
        assert crop["file"] == f"{crop['split']}/{crop['source']}/{counts.get((crop['split'], crop['source']), 0):06d}.png"
        counts[crop["split"], crop["source"]] = counts.get((crop["split"], crop["source"]), 0) + 1
        with Image.open(out / crop["file"]) as image:
            assert image.format == "PNG" and image.size == (32, 32)
    assert set(counts.values()) <= {SMALL["train_crops"], SMALL["val_crops"]}
    assert sum(counts.values()) == len(sources) * (SMALL["train_crops"] + SMALL["val_crops"])
    sources_md = (out / "SOURCES.md").read_text(encoding="utf-8")
    assert all(name in sources_md for name in sources) and "CC BY 2.0" in sources_md


def test_same_seed_same_files_other_seed_other_boxes(prepared, tmp_path):
    out, manifest = prepared
    again = prepare_photos(tmp_path / "again", **SMALL, log=_quiet)
    assert again == manifest
    for crop in manifest["crops"]:
        assert (tmp_path / "again" / crop["file"]).read_bytes() == (out / crop["file"]).read_bytes()
    other = prepare_photos(tmp_path / "other", **{**SMALL, "seed": 1}, log=_quiet)
    assert [c["box"] for c in other["crops"]] != [c["box"] for c in manifest["crops"]]


def test_both_splits_load_as_image_folders_with_the_same_classes(prepared):
    out, manifest = prepared
    train = ImageFolderDataset(out / "train", 32, train=True, hflip=True)
    val = ImageFolderDataset(out / "val", 32, train=False)
    assert train.class_names == val.class_names == sorted(s["name"] for s in manifest["sources"])
    assert len(train) == 10 * SMALL["train_crops"] and len(val) == 10 * SMALL["val_crops"]
    for dataset in (train, val):
        image, label = dataset[len(dataset) - 1]
        assert image.shape == (3, 32, 32) and label == dataset.num_classes - 1
        assert -1.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.0
    assert train.skipped == val.skipped == 0


def test_rerun_is_a_no_op_and_new_settings_replace_an_earlier_output(tmp_path):
    out = tmp_path / "photos"
    first = prepare_photos(out, **SMALL, log=_quiet)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    time.sleep(0.01)
    messages = []
    assert prepare_photos(out, **SMALL, log=messages.append) == first
    assert "up to date" in messages[0] and (out / "manifest.json").stat().st_mtime_ns == stamp
    second = prepare_photos(out, **{**SMALL, "train_crops": 2}, log=_quiet)
    assert json.loads((out / "manifest.json").read_text())["settings"]["train_crops"] == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(c["file"] for c in second["crops"])
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]  # no partial or old folders left behind


def test_refuses_to_overwrite_foreign_content(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier output.*notes.txt"):
        prepare_photos(foreign, **SMALL, log=_quiet)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    # An earlier output with a file added by someone else is not ours to delete either.
    out = tmp_path / "photos"
    prepare_photos(out, **SMALL, log=_quiet)
    (out / "train" / "chelsea" / "extra.png").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="did not write.*extra.png"):
        prepare_photos(out, **{**SMALL, "seed": 3}, log=_quiet)
    assert (out / "train" / "chelsea" / "extra.png").read_bytes() == b"not ours"

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        prepare_photos(a_file, **SMALL, log=_quiet)
    (tmp_path / "empty").mkdir()
    assert prepare_photos(tmp_path / "empty", **SMALL, log=_quiet)["crops"]
