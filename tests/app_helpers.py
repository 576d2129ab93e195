"""Tiny randomly initialised demo models and a served demo, shared by the app tests."""

from __future__ import annotations

import socket
from pathlib import Path

import torch

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


MAIN_DECODE = dict(steps=3, cfg=1.25)  # saved sampler defaults of the tiny models: unlike the library's,
PHOTO_DECODE = dict(steps=2, cfg=1.0)  # and unlike each other, so a test sees which one was used


def tiny_tokenizer_config(**overrides):
    from tokenizer import FlowMoConfig

    fields = dict(image_size=32, patch_size=4, code_length=16, context_dim=12, lfq_bits=6, enc_width=1 / 3,
                  dec_width=1 / 3, enc_depth=1, dec_depth=1, num_heads=2, decode=dict(MAIN_DECODE))
    fields.update(overrides)
    return FlowMoConfig(**fields)


def make_photo_tokenizer(directory: Path, seed: int = 1) -> Path:
    """A tiny photo tokenizer at 16 px (the main one is 32 px) in ``directory``."""
    from tokenizer import FlowMo

    torch.manual_seed(seed)
    FlowMo(tiny_tokenizer_config(image_size=16, decode=dict(PHOTO_DECODE))).save_pretrained(directory)
    return directory


def make_demo_weights(directory: Path, seed: int = 0, tokenizer_hash: str | None = "match",
                      photo: bool = False) -> Path:
    """Write tokenizer/, maskgit/, ar/ (and photo_tokenizer/ when ``photo``) like app/weights/ holds."""
    from generator import ARTransformer, GeneratorConfig, MaskGIT
    from tokenizer import FlowMo

    torch.manual_seed(seed)
    config = tiny_tokenizer_config()
    FlowMo(config).save_pretrained(directory / "tokenizer")
    for model_cls, kind in ((MaskGIT, "maskgit"), (ARTransformer, "ar")):
        generator_config = GeneratorConfig(
            model=kind, seq_len=config.num_indices, vocab_size=config.vocab_size, num_classes=10,
            class_names=DIGIT_NAMES, width=64, depth=1, num_heads=2,
            tokenizer_hash=config.architecture_hash() if tokenizer_hash == "match" else tokenizer_hash)
        model_cls(generator_config).save_pretrained(directory / kind)
    if photo:
        make_photo_tokenizer(directory / "photo_tokenizer")
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
