"""Encode a dataset once into a token cache for generator training.

    python -m generator.tokenize_dataset tokenizer.checkpoint=<FlowMo dir|run|.pth> data=imagenet_tar \
        data.train_tar=... data.train_index=... flip=true out=tokens/imagenet_lo

Resumable: run the same command again after an interruption and finished shards are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from tokenizer import FlowMo, load_flowmo
from runkit.cli import resolve_device, user_path

from .tokens import TokenCacheManifest, encoder_fingerprint, tokenize_to_cache


def load_tokenizer(tokenizer_cfg: Mapping[str, Any], device: str | torch.device = "cpu") -> FlowMo:
    """The FlowMo named by ``tokenizer.checkpoint`` (+ ``tokenizer.preset`` for a released .pth)."""
    checkpoint = tokenizer_cfg.get("checkpoint")
    if not checkpoint:
        raise ValueError("tokenizer.checkpoint is not set: pass tokenizer.checkpoint=<a saved FlowMo directory, "
                         "a tokenizer training run, or a released .pth with tokenizer.preset=flowmo_lo|flowmo_hi>")
    return load_flowmo(user_path(checkpoint), config=tokenizer_cfg.get("preset")).to(device).eval()


def default_cache_dir(root: str | os.PathLike, data_name: str, split: str, tokenizer: FlowMo, flip: bool,
                      jitter_views: int = 0, jitter_strength: float = 1.0) -> Path:
    """<root>/<data>_<split>_<architecture hash>_<encoder fingerprint>[_flip][_jitterK]: one cache per dataset,
    tokenizer and set of views."""
    suffix = ("_flip" if flip else "") + (f"_jitter{jitter_views}x{jitter_strength:g}" if jitter_views else "")
    return user_path(root) / (f"{data_name}_{split}_{tokenizer.config.architecture_hash()}_"
                              f"{encoder_fingerprint(tokenizer)}{suffix}")


def build_token_cache(data_cfg: Mapping[str, Any], tokenizer: FlowMo, out: str | os.PathLike, *, split: str = "train",
                      flip: bool = False, jitter_views: int = 0, jitter_strength: float = 1.0,
                      shard_size: int = 10_000, batch_size: int = 64,
                      num_workers: int = 0) -> TokenCacheManifest:
    """Build (or finish) the token cache of ``split`` of the dataset ``data_cfg`` in ``out``."""
    from imagedata import build_dataset

    dataset = build_dataset(data_cfg, split, image_size=tokenizer.config.image_size, train=False)
    return tokenize_to_cache(tokenizer, dataset, out, class_names=list(dataset.class_names), flip=flip,
                             jitter_views=jitter_views, jitter_strength=jitter_strength,
                             shard_size=shard_size, batch_size=batch_size, num_workers=num_workers,
                             source=f"{data_cfg.get('name')}:{split}")


@hydra.main(version_base="1.3", config_path="../configs", config_name="tokenize_dataset")
def main(cfg: DictConfig) -> None:
    tokenizer = load_tokenizer(cfg.tokenizer, resolve_device(cfg.device))
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    out = user_path(cfg.out) if cfg.out else default_cache_dir(cfg.cache_root, data_cfg["name"], cfg.split,
                                                                 tokenizer, cfg.flip, cfg.jitter_views,
                                                                 cfg.jitter_strength)
    manifest = build_token_cache(data_cfg, tokenizer, out, split=cfg.split, flip=cfg.flip,
                                 jitter_views=cfg.jitter_views, jitter_strength=cfg.jitter_strength,
                                 shard_size=cfg.shard_size, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    print(f"token cache: {out} ({manifest.num_items} images x {len(manifest.augmentations)} views, "
          f"{manifest.num_indices} indices of vocab {manifest.vocab_size}, {manifest.num_classes} classes)")


if __name__ == "__main__":
    main()
