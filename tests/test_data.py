"""Datasets (image folder, tar index, digits), build_dataset, and the resumable sampler."""

import io
import json
import tarfile
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from imagedata import (
    DigitsDataset,
    ImageFolderDataset,
    ImageNetTarDataset,
    ResumableSampler,
    build_dataset,
    infinite_batches,
    synset_of,
    write_tar_index,
)
from runkit.images import tensor_to_uint8


def _solid(value: int, size=(12, 10)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def _png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    (root / "dog" / "nested").mkdir(parents=True)
    _solid(10).save(root / "cat" / "a.png")
    (root / "cat" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    _solid(30).save(root / "cat" / "c.webp", lossless=True)
    _solid(50).save(root / "dog" / "d.bmp")
    _solid(70).save(root / "dog" / "nested" / "e.tif")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_classes_formats_and_bad_files(image_folder):
    dataset = ImageFolderDataset(image_folder, 8, train=False)
    assert dataset.class_names == ["cat", "dog"] and dataset.num_classes == 2
    assert len(dataset) == 5  # the .txt is not listed
    values, labels = [], []
    with pytest.warns(RuntimeWarning, match="b.jpg"):
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert image.shape == (3, 8, 8)
            values.append(int(tensor_to_uint8(image)[0, 0, 0]))
            labels.append(label)
    # b.jpg (index 1) is replaced by the next good sample, c.webp, with its own label.
    assert values == [10, 30, 30, 50, 70]
    assert labels == [0, 0, 0, 1, 1]
    assert dataset.skipped == 1


def test_image_folder_errors_and_flat_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageFolderDataset(tmp_path / "nope", 8, train=False)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", 8, train=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    _solid(5).save(flat / "x.png")
    dataset = ImageFolderDataset(flat, 8, train=False)
    assert dataset.class_names == ["flat"] and dataset[0][1] == 0


def test_image_folder_all_bad_raises(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.png").write_bytes(b"junk")
    dataset = ImageFolderDataset(tmp_path, 8, train=False)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="no readable image"):
        dataset[0]


def _build_tar(tmp_path, members):
    tar_path = tmp_path / "data.tar"
    with tarfile.open(tar_path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return tar_path


def test_tar_dataset_reads_the_right_bytes_and_labels(tmp_path):
    members = [
        ("n02000000/n02000000_1.png", _png_bytes(_solid(200))),
        ("n01000000_7.png", _png_bytes(_solid(40))),
        ("n02000000/n02000000_2.png", b"corrupt bytes"),
        ("n01000000/n01000000_3.png", _png_bytes(_solid(90))),
    ]
    tar_path = _build_tar(tmp_path, members)
    entries = write_tar_index(tar_path, tmp_path / "index.json")
    raw = tar_path.read_bytes()
    for entry, (name, data) in zip(entries, members):
        assert entry["name"] == name and raw[entry["offset"] : entry["offset"] + entry["size"]] == data
    dataset = ImageNetTarDataset(tar_path, tmp_path / "index.json", 8, train=False)
    assert dataset.class_names == ["n01000000", "n02000000"]
    assert [int(tensor_to_uint8(dataset[i][0])[0, 0, 0]) for i in (0, 1, 3)] == [200, 40, 90]
    assert [dataset[i][1] for i in (0, 1, 3)] == [1, 0, 0]
    with pytest.warns(RuntimeWarning, match="n02000000_2.png"):
        image, label = dataset[2]
    assert int(tensor_to_uint8(image)[0, 0, 0]) == 90 and label == 0 and dataset.skipped == 1

    class_index = tmp_path / "classes.json"
    class_index.write_text(json.dumps({"n01000000": 5, "n02000000": 3}))
    remapped = ImageNetTarDataset(tar_path, tmp_path / "index.json", 8, False, class_index_path=class_index)
    assert remapped[0][1] == 3 and remapped.class_names[5] == "n01000000"


def test_tar_dataset_survives_pickling_for_workers(tmp_path):
    import pickle

    tar_path = _build_tar(tmp_path, [("n01000000/a.png", _png_bytes(_solid(60)))])
    write_tar_index(tar_path, tmp_path / "index.json")
    dataset = ImageNetTarDataset(tar_path, tmp_path / "index.json", 8, train=False)
    dataset[0]  # opens the file
    clone = pickle.loads(pickle.dumps(dataset))
    assert int(tensor_to_uint8(clone[0][0])[0, 0, 0]) == 60


def test_tar_index_validation(tmp_path):
    tar_path = _build_tar(tmp_path, [("n01000000/a.png", _png_bytes(_solid(1)))])
    index = tmp_path / "index.json"
    index.write_text(json.dumps([{"name": "n01000000/a.png", "offset": 10**9, "size": 5}]))
    with pytest.raises(ValueError, match="outside"):
        ImageNetTarDataset(tar_path, index, 8, train=False)
    index.write_text(json.dumps([{"name": "x"}]))
    with pytest.raises(ValueError, match="entry 0"):
        ImageNetTarDataset(tar_path, index, 8, train=False)


def test_synset_of():
    assert synset_of("n01440764/n01440764_10026.JPEG") == "n01440764"
    assert synset_of("train/n01440764/x.JPEG") == "n01440764"
    assert synset_of("n01440764_10026.JPEG") == "n01440764"
    with pytest.raises(ValueError, match="validation"):
        synset_of("ILSVRC2012_val_00000001.JPEG")


def test_digits_split_is_fixed_stratified_and_scaled():
    train = DigitsDataset("train", 16)
    val = DigitsDataset("val", 16)
    assert len(train) == 1500 and len(val) == 297
    assert set(train.indices.tolist()).isdisjoint(val.indices.tolist())
    assert torch.equal(val.indices, DigitsDataset("val", 8).indices)
    counts = Counter(val.targets.tolist())
    assert len(counts) == 10 and max(counts.values()) - min(counts.values()) <= 1
    assert val.class_names[3] == "three" and val.num_classes == 10
    image, label = val[0]
    assert image.shape == (3, 16, 16) and isinstance(label, int)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    native, _ = DigitsDataset("val", 8)[0]
    from sklearn.datasets import load_digits

    raw = load_digits().images[int(val.indices[0])]
    np.testing.assert_allclose(native[0].numpy(), raw / 8.0 - 1.0, atol=1e-6)
    everything = torch.stack([val[i][0] for i in range(20)])
    assert everything.min() >= -1 and everything.max() <= 1 and everything.min() == -1
    with pytest.raises(ValueError, match="split"):
        DigitsDataset("test", 8)


def test_build_dataset_dispatch_and_errors(image_folder, tmp_path):
    digits = build_dataset({"name": "digits", "subsample": 10}, "val", 8, train=False)
    assert len(digits) == 10 and digits.num_classes == 10
    folder = build_dataset({"name": "imagefolder", "root": str(image_folder)}, "train", 8, True)
    assert len(folder) == 5
    with pytest.raises(ValueError, match="data.val_root is not set"):
        build_dataset({"name": "imagefolder", "root": str(image_folder)}, "val", 8, False)
    with pytest.raises(FileNotFoundError, match="data.root"):
        build_dataset({"name": "imagefolder", "root": str(tmp_path / "missing")}, "train", 8, True)
    with pytest.raises(ValueError, match="unknown dataset name 'cifar'"):
        build_dataset({"name": "cifar"}, "train", 8, True)
    with pytest.raises(ValueError, match="data.val_tar"):
        build_dataset({"name": "imagenet_tar", "val_tar": None}, "val", 8, False)


def test_build_dataset_reads_hydra_style_configs(image_folder):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": "imagenet_tar", "train_tar": "???", "train_index": "???"})
    with pytest.raises(ValueError, match="data.train_tar is not set"):
        build_dataset(cfg, "train", 8, True)
    cfg = OmegaConf.create({"name": "imagefolder", "root": str(image_folder), "max_pixels": 10})
    dataset = build_dataset(cfg, "train", 8, True)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError):
        warnings.simplefilter("always")
        dataset[0]
    assert sum("max_pixels=10" in str(w.message) for w in caught) == 4  # every readable file is too big
    assert dataset.skipped == 5


def _consume(sampler, n):
    taken = list(iter(sampler))[:n]
    sampler.advance(len(taken))
    return taken


def test_sampler_resume_continues_exactly():
    reference = ResumableSampler(10, seed=3)
    stream = _consume(reference, 7)
    stream += _consume(reference, 3)  # finishes epoch 0
    assert sorted(stream) == list(range(10))
    stream += _consume(reference, 4)
    resumed = ResumableSampler(10, seed=3)
    resumed.advance(12)
    state = resumed.state_dict()
    assert state == {"epoch": 1, "position": 2, "seed": 3}
    fresh = ResumableSampler(10, seed=3)
    fresh.load_state_dict(state)
    assert list(iter(fresh))[:2] == stream[12:14]
    assert len(fresh) == 8
    assert _consume(ResumableSampler(10, seed=4), 10) != stream[:10]
    with pytest.raises(ValueError, match="seed"):
        ResumableSampler(10, seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="position"):
        ResumableSampler(4, seed=3).load_state_dict({"epoch": 0, "position": 7, "seed": 3})


def test_sampler_shards_are_disjoint_and_cover():
    shards = [ResumableSampler(23, seed=1, num_replicas=4, rank=r) for r in range(4)]
    for epoch in (0, 1):
        slices = [set(s.epoch_indices(epoch).tolist()) for s in shards]
        assert all(len(part) == 5 for part in slices)
        assert len(set.union(*slices)) == 20
    assert shards[0].epoch_indices(0).tolist() != shards[0].epoch_indices(1).tolist()
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(10, num_replicas=2, rank=2)


class _IndexDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, index):
        return torch.full((3, 2, 2), float(index)), index


def test_infinite_batches_resume_matches_uninterrupted_run():
    dataset = _IndexDataset()
    sampler = ResumableSampler(len(dataset), seed=0)
    batches = infinite_batches(dataset, 3, sampler)
    uninterrupted = [next(batches)[1].tolist() for _ in range(7)]
    # 10 samples, batches of 3: the partial batch at each epoch end is dropped.
    assert sorted(sum(uninterrupted[:3], [])) == sorted(ResumableSampler(10).epoch_indices(0)[:9].tolist())

    sampler = ResumableSampler(len(dataset), seed=0)
    batches = infinite_batches(dataset, 3, sampler)
    first = [next(batches)[1].tolist() for _ in range(3)]
    state = sampler.state_dict()
    restarted = ResumableSampler(len(dataset), seed=0)
    restarted.load_state_dict(state)
    resumed = infinite_batches(dataset, 3, restarted)
    rest = [next(resumed)[1].tolist() for _ in range(4)]
    assert first + rest == uninterrupted
    with pytest.raises(ValueError, match="batch_size"):
        next(infinite_batches(dataset, 11, ResumableSampler(10)))


def test_random_crops_resume_exactly_with_worker_processes(tmp_path):
    """Crops depend on (seed, epoch, index) only: a mid-epoch resume with 2 workers sees the same pixels."""
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(tmp_path / "a" / f"{i}.png")
    dataset = ImageFolderDataset(tmp_path, image_size=16, train=True, hflip=True)

    def run(resume_after: int | None, total: int = 6) -> list[torch.Tensor]:
        sampler = ResumableSampler(len(dataset), seed=3)
        batches = infinite_batches(dataset, 2, sampler, num_workers=2)
        images = []
        for step in range(total):
            if step == resume_after:
                state = sampler.state_dict()
                sampler = ResumableSampler(len(dataset), seed=3)
                sampler.load_state_dict(state)
                batches = infinite_batches(dataset, 2, sampler, num_workers=2)
            images.append(next(batches)[0])
        return images

    uninterrupted, resumed = run(None), run(resume_after=3)
    for a, b in zip(uninterrupted, resumed):
        assert torch.equal(a, b)
    assert not torch.equal(uninterrupted[0], uninterrupted[4])  # epoch 2 draws other crops


def test_evenly_spaced_covers_the_whole_range():
    from imagedata.subsets import evenly_spaced

    assert evenly_spaced(100, 5) == [0, 25, 50, 74, 99]
    assert evenly_spaced(3, 10) == [0, 1, 2]
    assert evenly_spaced(0, 4) == []
    with pytest.raises(ValueError, match="positive"):
        evenly_spaced(10, 0)
