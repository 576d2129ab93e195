"""``build_dataset``: the dataset a ``data`` config names (configs/data/*.yaml), for one split."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from runkit.cli import user_path

from .digits import DigitsDataset
from .emoji_dataset import EmojiDataset
from .folder import ImageFolderDataset
from .imagenet_tar import ImageNetTarDataset
from .photo_crops import CropSettings, PhotoCropsDataset
from .subsets import SubsetDataset


def _config_value(data_cfg: Mapping, key: str) -> Any:
    """``data_cfg[key]`` or None; an OmegaConf "???" (mandatory, unset) also reads as None."""
    try:
        return data_cfg.get(key)
    except Exception as error:
        if type(error).__name__ == "MissingMandatoryValue":
            return None
        raise


def _required_path(data_cfg: Mapping, key: str) -> Path:
    value = _config_value(data_cfg, key)
    if value in (None, "", "???"):
        raise ValueError(f"data.{key} is not set: pass data.{key}=/path/to/... on the command line")
    path = user_path(value)
    if not path.exists():
        raise FileNotFoundError(f"data.{key} does not exist: {path}")
    return path


def _optional_int(value) -> int | None:
    return None if value is None else int(value)


def build_dataset(data_cfg: Mapping, split: str, image_size: int, train: bool) -> Dataset:
    """The dataset named by ``data_cfg["name"]`` ("imagefolder", "imagenet_tar", "digits", "photo_crops", "emoji").

    ``split`` is "train" or "val". Keys per name: imagefolder ``root`` / ``val_root``; photo_crops
    ``root`` (a corpus of ``python -m imagedata.prepare photos``), ``train_split`` / ``val_split``
    (its sub-folders: train, val, test_unseen), ``min_scale``, ``max_scale``, ``jitter``,
    ``eval_crops``, ``cache_side``, ``package_balance``, ``crops_per_photo``, ``{split}_max_photos``
    (:mod:`imagedata.photo_crops`);
    imagenet_tar ``train_tar``, ``train_index``, ``val_tar``, ``val_index`` and optional
    ``class_index``; all: optional ``subsample`` (N evenly spaced images of the val split),
    ``max_pixels``, ``hflip`` (random horizontal flips when ``train``);
    emoji ``root`` (``python -m imagedata.prepare emoji``), ``train_split`` / ``val_split`` (train, val:
    held-out emoji, test_style: the held-out style), ``styles`` (null: all of the split),
    ``scale_jitter``, ``shift_jitter`` (:mod:`imagedata.emoji_dataset`).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    name = data_cfg.get("name")
    max_pixels = _config_value(data_cfg, "max_pixels")
    common = {
        "max_pixels": int(max_pixels) if max_pixels is not None else None,
        "hflip": bool(_config_value(data_cfg, "hflip")),
    }
    if name == "digits":
        dataset: Dataset = DigitsDataset(split, image_size, train)
    elif name == "imagefolder":
        key = "root" if split == "train" else "val_root"
        dataset = ImageFolderDataset(_required_path(data_cfg, key), image_size, train, **common)
    elif name == "imagenet_tar":
        class_index = _config_value(data_cfg, "class_index")
        dataset = ImageNetTarDataset(
            _required_path(data_cfg, f"{split}_tar"),
            _required_path(data_cfg, f"{split}_index"),
            image_size,
            train,
            class_index_path=_required_path(data_cfg, "class_index") if class_index else None,
            **common,
        )
    elif name == "photo_crops":
        root = _required_path(data_cfg, "root")
        folder = root / str(_config_value(data_cfg, f"{split}_split") or split)
        if not folder.is_dir():
            raise FileNotFoundError(f"data.{split}_split: {folder} does not exist (the corpus splits are the "
                                    f"sub-folders of {root}: {sorted(p.name for p in root.iterdir() if p.is_dir())})")
        settings = CropSettings(**{key: _config_value(data_cfg, key) for key in ("min_scale", "max_scale", "jitter")
                                   if _config_value(data_cfg, key) is not None},
                                hflip=bool(_config_value(data_cfg, "hflip")))
        dataset = PhotoCropsDataset(folder, image_size, train, settings=settings,
                                    eval_crops=int(_config_value(data_cfg, "eval_crops") or 4),
                                    cache_side=int(_config_value(data_cfg, "cache_side") or 768),
                                    max_pixels=common["max_pixels"],
                                    max_photos=_optional_int(_config_value(data_cfg, f"{split}_max_photos")),
                                    package_balance=float(_config_value(data_cfg, "package_balance") or 0.0)
                                    if split == "train" else 0.0,
                                    crops_per_photo=int(_config_value(data_cfg, "crops_per_photo") or 1))
    elif name == "emoji":
        styles = _config_value(data_cfg, "styles")
        dataset = EmojiDataset(_required_path(data_cfg, "root"), str(_config_value(data_cfg, f"{split}_split") or split),
                               image_size, train, styles=tuple(styles) if styles else None,
                               scale_jitter=float(_config_value(data_cfg, "scale_jitter") or 0.0),
                               shift_jitter=float(_config_value(data_cfg, "shift_jitter") or 0.0))
    else:
        raise ValueError(f"unknown dataset name {name!r}: expected 'imagefolder', 'imagenet_tar', 'digits', "
                         "'photo_crops' or 'emoji'")
    subsample = _config_value(data_cfg, "subsample")
    if subsample is not None and split != "train":
        dataset = SubsetDataset(dataset, int(subsample))
    return dataset
