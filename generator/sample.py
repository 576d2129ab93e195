"""Sample a labelled image grid from a generator + FlowMo tokenizer.

    python -m generator.sample checkpoint=<generator dir|run> tokenizer.checkpoint=<FlowMo> \
        class_ids=[0,1,2] samples_per_class=4 out=grid.png [save_indices=grid_indices.safetensors]
    python -m generator.sample ... prompt="a golden retriever and a tabby cat"

Generation goes through :class:`generator.pipeline.Pipeline`, the API Python callers and the demo use, so
the same seed gives the same images there.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from runkit.fileio import atomic_write
from runkit import acceleration
from runkit.cli import SAMPLING_RULES, check_numbers, resolve_device, user_path

from .loading import load_generator
from .pipeline import Pipeline
from .tokenize_dataset import load_tokenizer

OPTION_RULES = {**SAMPLING_RULES, "samples_per_class": "int >= 1", "seed": "int >= 0", "batch_size": "int >= 1",
                "decode_steps": "int >= 1 or null", "decode_cfg": "float >= 0 or null"}


def save_indices(path: str | os.PathLike, indices: torch.Tensor, class_ids: Sequence[int]) -> Path:
    from safetensors.torch import save_file

    tensors = {"indices": indices.contiguous(), "class_ids": torch.as_tensor(list(class_ids), dtype=torch.long)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


@hydra.main(version_base="1.3", config_path="../configs", config_name="generator_sample")
def main(cfg: DictConfig) -> None:
    from runkit.images import save_image_grid

    check_numbers(cfg, OPTION_RULES)
    device = resolve_device(cfg.device)
    model = load_generator(user_path(cfg.checkpoint), map_location=device)
    model.set_attention_backend(cfg.attention_backend)
    tokenizer = load_tokenizer(cfg.tokenizer, device)
    mismatch = model.other_tokenizer_warning(tokenizer)
    if mismatch:
        warnings.warn(mismatch, stacklevel=1)
    pipe = Pipeline(model, tokenizer)
    if cfg.prompt:
        classes = pipe.vocabulary().classes_for_prompt(cfg.prompt)
        print(f"prompt {cfg.prompt!r} -> " + ", ".join(f"{c} ({model.class_names[c]})" for c in classes))
    elif cfg.class_ids:
        classes = [int(c) for c in cfg.class_ids]
    else:
        raise ValueError("say what to draw: class_ids=[...] or prompt=\"...\"")
    class_ids = [c for c in classes for _ in range(cfg.samples_per_class)]
    options = {k: v for k, v in OmegaConf.to_container(cfg.sampling, resolve=True).items() if v is not None}
    batches = -(-len(class_ids) // cfg.batch_size)
    compile_choice, precision = acceleration.inference_choices([model, tokenizer], cfg.compile, cfg.mixed_precision,
                                                               device, batches)
    print(acceleration.describe(compile_choice, precision))
    if compile_choice.value:
        for note in acceleration.compile_for_inference([model, tokenizer]):
            print(note)
    with acceleration.autocast(device, precision.value):
        generated = pipe.generate(class_ids, seed=cfg.seed, batch_size=cfg.batch_size, decode_steps=cfg.decode_steps,
                                  decode_cfg=cfg.decode_cfg, **options)
    out = user_path(cfg.out)
    save_image_grid(generated.images, out, nrow=cfg.samples_per_class,
                    labels=[model.class_names[c] for c in class_ids])
    print(f"wrote {out} ({len(class_ids)} samples)")
    if cfg.save_indices:
        print(f"wrote {save_indices(user_path(cfg.save_indices), generated.indices, class_ids)}")


if __name__ == "__main__":
    main()
