"""Streaming photo crops: fresh crops every epoch at many scales, reproducible, fixed eval crops."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagedata import build_dataset
from imagedata.photo_crops import CropSettings, PhotoCropsDataset, colour_jitter, crop_box


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> Path:
    from skimage import data

    root = tmp_path_factory.mktemp("corpus")
    for split, photos in {"train": ("astronaut", "coffee", "chelsea"), "val": ("rocket",)}.items():
        (root / split / "pkg").mkdir(parents=True)
        for name in photos:
            Image.fromarray(getattr(data, name)()).save(root / split / "pkg" / f"{name}.png")
    return root


def test_every_epoch_draws_a_new_crop_of_every_photo_and_resumes_exactly(photo_root):
    dataset = PhotoCropsDataset(photo_root / "train", 32, train=True)
    assert len(dataset) == 3
    crops = []
    for epoch in range(6):
        dataset.set_augmentation_epoch(seed=0, epoch=epoch)
        crops.append(torch.stack([dataset[i][0] for i in range(3)]))
    flat = torch.stack(crops).flatten(0, 1)  # 18 crops
    distances = torch.cdist(flat.flatten(1), flat.flatten(1))
    assert (distances + torch.eye(18) * 1e9).min() > 1.0  # no two crops alike
    again = PhotoCropsDataset(photo_root / "train", 32, train=True)
    again.set_augmentation_epoch(seed=0, epoch=4)
    assert torch.equal(again[1][0], crops[4][1])  # a function of (seed, epoch, photo) alone


def test_crop_sides_span_the_configured_scales():
    settings = CropSettings(min_scale=0.05, max_scale=0.9)
    generator = torch.Generator().manual_seed(0)
    sides = [crop_box(2000, 1000, settings, generator)[2] for _ in range(2000)]
    assert min(sides) >= 50 and max(sides) <= 900
    assert min(sides) < 60 and max(sides) > 850  # log-uniform: both ends are reached
    assert 150 < float(np.median(sides)) < 300  # around sqrt(0.05 * 0.9) * 1000 = 212
    for _ in range(200):
        left, top, side = crop_box(300, 120, settings, generator)
        assert 0 <= left and left + side <= 300 and 0 <= top and top + side <= 120


def test_colour_jitter_is_mild_and_stays_in_range():
    pixels = torch.rand(3, 16, 16) * 2 - 1
    out = colour_jitter(pixels, 0.1, torch.Generator().manual_seed(1))
    assert out.min() >= -1 and out.max() <= 1
    assert 0 < (out - pixels).abs().mean() < 0.2
    assert torch.equal(colour_jitter(pixels, 0.0, torch.Generator()), pixels)


def test_eval_crops_are_fixed_and_cover_each_photo_several_times(photo_root):
    dataset = PhotoCropsDataset(photo_root / "val", 32, train=False, eval_crops=5)
    assert len(dataset) == 5
    first = torch.stack([dataset[i][0] for i in range(5)])
    assert torch.equal(first, torch.stack([dataset[i][0] for i in range(5)]))
    assert len({tuple(x.flatten()[:20].tolist()) for x in first}) == 5


def test_build_dataset_reads_the_corpus_splits_and_names_a_missing_one(photo_root):
    cfg = {"name": "photo_crops", "root": str(photo_root), "train_split": "train", "val_split": "val",
           "min_scale": 0.1, "max_scale": 0.5, "jitter": 0.05, "hflip": True, "eval_crops": 2}
    train = build_dataset(cfg, "train", 32, train=True)
    assert isinstance(train, PhotoCropsDataset) and len(train) == 3 and train.settings.max_scale == 0.5
    assert len(build_dataset(cfg, "val", 32, train=False)) == 2
    with pytest.raises(FileNotFoundError, match="test_unseen does not exist.*'train', 'val'"):
        build_dataset({**cfg, "val_split": "test_unseen"}, "val", 32, train=False)


def test_bad_settings_and_unreadable_photos_are_clear(photo_root, tmp_path):
    with pytest.raises(ValueError, match="0 < min_scale <= max_scale <= 1"):
        CropSettings(min_scale=0.5, max_scale=0.2)
    with pytest.raises(ValueError, match="cache_side"):
        PhotoCropsDataset(photo_root / "train", 64, train=True, cache_side=32)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(tmp_path / "pkg" / "grey.png")
    dataset = PhotoCropsDataset(tmp_path, 16, train=True)
    with pytest.warns(RuntimeWarning, match="broken.png"):
        image, _ = dataset[0]  # the unreadable photo is skipped for the next readable one
    assert image.shape == (3, 16, 16) and dataset.skipped == 1


def test_subsets_spread_over_packages_and_small_packages_are_repeated_with_distinct_crops(tmp_path):
    from imagedata.photo_crops import package_repeats, spread_over_packages

    labels = [0] * 40 + [1] * 4 + [2]
    chosen = spread_over_packages(labels, 7)
    assert len(chosen) == 7 and {labels[i] for i in chosen} == {0, 1, 2}
    assert [labels[i] for i in chosen].count(0) == 3  # round-robin: 0, 1, 2, 0, 1, 0, 1
    firsts = [i for i in spread_over_packages(labels, 45) if labels[i] == 0]
    assert firsts == list(range(40))  # every photo once the count allows
    assert spread_over_packages(labels, 3) == [0, 40, 44]
    assert package_repeats(labels, 0.0) == [1] * 45
    assert package_repeats(labels, 1.0) == [1] * 40 + [10] * 4 + [40]
    assert package_repeats(labels, 0.5)[-1] == round(40 ** 0.5)
    with pytest.raises(ValueError, match="package_balance"):
        package_repeats(labels, 1.5)
    with pytest.raises(ValueError, match="max_photos"):
        spread_over_packages(labels, 0)

    from skimage import data
    for package, photos in {"big": ("astronaut", "coffee", "chelsea", "rocket"), "small": ("immunohistochemistry",)}.items():
        (tmp_path / package).mkdir()
        for name in photos:
            Image.fromarray(getattr(data, name)()).save(tmp_path / package / f"{name}.png")
    dataset = PhotoCropsDataset(tmp_path, 32, train=True, package_balance=1.0)
    assert len(dataset) == 8  # 4 big photos once, the one small photo 4 times
    dataset.set_augmentation_epoch(seed=0, epoch=0)
    small = torch.stack([dataset[i][0] for i in range(4, 8)])
    assert all(dataset[i][1] == 1 for i in range(4, 8))
    assert (torch.cdist(small.flatten(1), small.flatten(1)) + torch.eye(4) * 1e9).min() > 1.0
    subset = PhotoCropsDataset(tmp_path, 32, train=False, max_photos=2, eval_crops=3)
    assert subset.photos == 2 and len(subset) == 6 and {subset[i][1] for i in range(6)} == {0, 1}


def test_crops_per_photo_fills_an_epoch_with_distinct_crops(photo_root):
    dataset = PhotoCropsDataset(photo_root / "train", 32, train=True, crops_per_photo=4)
    assert len(dataset) == 12
    dataset.set_augmentation_epoch(seed=0, epoch=0)
    crops = torch.stack([dataset[i][0] for i in range(12)]).flatten(1)
    assert (torch.cdist(crops, crops) + torch.eye(12) * 1e9).min() > 1.0
    with pytest.raises(ValueError, match="crops_per_photo"):
        PhotoCropsDataset(photo_root / "train", 32, train=True, crops_per_photo=0)


def test_eval_crops_with_no_content_are_drawn_again(tmp_path, monkeypatch):
    import imagedata.photo_crops as photo_crops

    (tmp_path / "sky").mkdir()
    night = np.zeros((400, 400, 3), np.uint8)
    night[:, :200] = np.random.default_rng(0).integers(0, 255, (400, 200, 3))  # stars on the left half only
    Image.fromarray(night).save(tmp_path / "sky" / "night.png")
    crops = [PhotoCropsDataset(tmp_path, 32, train=False, eval_crops=16)[i][0] for i in range(16)]
    assert not any(photo_crops.is_flat(crop) for crop in crops)
    monkeypatch.setattr(photo_crops, "FLAT_REDRAWS", 0)  # the first draws alone: some land in the empty half
    first = [PhotoCropsDataset(tmp_path, 32, train=False, eval_crops=16)[i][0] for i in range(16)]
    assert any(photo_crops.is_flat(crop) for crop in first)
    assert photo_crops.is_flat(torch.full((3, 8, 8), -1.0)) and not photo_crops.is_flat(torch.rand(3, 8, 8) * 2 - 1)


def test_data_record_lists_the_corpus_files_behind_the_photos(photo_root, tmp_path):
    import json
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(photo_root, corpus)
    files = [{"file": f"train/pkg/{name}.png", "package": "pkg", "version": "1.0", "licence": licence,
              "path": f"usr/share/{name}.png", "sha256": "0" * 64, "split": "train"}
             for name, licence in (("astronaut", "PD"), ("coffee", "CC0"), ("chelsea", "PD"))]
    (corpus / "manifest.json").write_text(json.dumps({"generator": "imagedata.photo_corpus", "origin": "debian",
                                                      "files": files}))
    record = PhotoCropsDataset(corpus / "train", 32, train=True, max_photos=2).data_record()
    assert record["split"] == "train" and record["origin"] == "debian"
    # max_photos=2 of (astronaut, chelsea, coffee): the first and the last, spread over the sorted files
    assert [photo["file"] for photo in record["photos"]] == ["train/pkg/astronaut.png", "train/pkg/coffee.png"]
    assert record["packages"] == {"pkg": {"version": "1.0", "licences": ["PD", "CC0"], "photos": 2}}
    bare = PhotoCropsDataset(photo_root / "val", 32, train=False).data_record()  # no manifest: names only
    assert bare["photos"] == [{"file": str(photo_root / "val" / "pkg" / "rocket.png")}]
