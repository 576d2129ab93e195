"""Tiny randomly initialised demo models and a served demo, shared by the app tests."""

from __future__ import annotations

import socket
from pathlib import Path

import torch

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def tiny_tokenizer_config(**overrides):
    from tokenizer import FlowMoConfig

    fields = dict(image_size=32, patch_size=4, code_length=16, context_dim=12, lfq_bits=6, enc_width=1 / 3,
                  dec_width=1 / 3, enc_depth=1, dec_depth=1, num_heads=2)
    fields.update(overrides)
    return FlowMoConfig(**fields)


def make_demo_weights(directory: Path, seed: int = 0, tokenizer_hash: str | None = "match") -> Path:
    """Write tokenizer/, maskgit/, ar/ (config.json + model.safetensors) like app/weights/ holds."""
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
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
