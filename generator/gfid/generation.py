"""Generation: ``sample_fn`` into the unfinished shards of a run, and the ``sample_fn`` of a generator + FlowMo."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from runkit.images import tensor_to_uint8

from .plan import classes_for_samples
from .shards import ShardStore

SampleFn = Callable[[Tensor, Tensor], Any]
"""``sample_fn(class_ids (B,) int64, seeds (B,) int64) -> images (B, 3, H, W) float in [-1, 1]``, or
``(images, token indices (B, L))``: the tokens are then kept in the shards for copy detection."""
ProgressFn = Callable[[float, str], Any]
"""``progress(fraction in [0, 1], message)``; the app passes a ``gr.Progress``."""


def generate_shards(sample_fn: SampleFn, store: ShardStore, *, rank: int = 0, world_size: int = 1,
                    progress: ProgressFn | None = None, show_progress_bar: bool = True) -> int:
    """Generate every unfinished shard of this process; returns the number of images generated."""
    plan = store.plan
    todo = [k for k in plan.shards_for_process(rank, world_size) if not store.is_done(k)]
    total = sum(len(plan.shard_indices(k)) for k in todo)
    generated = 0
    bar = tqdm(total=total, unit="img", desc=f"generating (rank {rank})" if world_size > 1 else "generating",
               disable=not show_progress_bar or total == 0)
    with bar, torch.no_grad():
        for shard in todo:
            indices = plan.shard_indices(shard)
            labels = classes_for_samples(indices, plan.num_classes)
            seeds = plan.shard_seeds(shard)
            images, tokens = [], []
            for start in range(0, len(indices), plan.batch_size):
                batch_labels = labels[start:start + plan.batch_size]
                batch = sample_fn(torch.from_numpy(batch_labels),
                                  torch.from_numpy(seeds[start:start + plan.batch_size]))
                if isinstance(batch, tuple):
                    batch, batch_tokens = batch
                    tokens.append(batch_tokens.detach().to("cpu", torch.int64).numpy())
                images.append(tensor_to_uint8(_check_samples(batch, len(batch_labels))).numpy())
                generated += images[-1].shape[0]
                bar.update(images[-1].shape[0])
                if progress is not None:
                    progress(generated / max(total, 1), f"generated {generated}/{total} images")
            store.write(shard, np.concatenate(images), labels, indices, seeds,
                        np.concatenate(tokens) if tokens else None)
    return generated


def _check_samples(images: Tensor, expected: int) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[:2] != (expected, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"sample_fn must return images ({expected}, 3, H, W) in [-1, 1]; got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"sample_fn must return float images in [-1, 1]; got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("sample_fn returned non-finite pixel values (NaN/inf)")
    return images.detach().float().cpu()


def make_sample_fn(generator_model: torch.nn.Module, tokenizer: torch.nn.Module,
                   gen_kwargs: Mapping[str, Any] | None = None,
                   dec_kwargs: Mapping[str, Any] | None = None) -> SampleFn:
    """Chain ``generator_model.generate`` -> ``tokenizer.decode`` into a ``SampleFn`` giving (images, tokens).

    ``gen_kwargs``: the generator's sampling options (num_steps, cfg_scale, temperature, top_k,
    top_p, cfg_schedule, ...; ``None`` values are left to the model's defaults). ``dec_kwargs``:
    FlowMo.decode options (steps, cfg, schedule, cfg_interval). Token sampling draws every sample
    from its own torch.Generator and the decoder's initial noise from its own seed (on the CPU, so
    it is the same on every device). Both models
    are put in eval mode, and the generator must match the tokenizer (``check_tokenizer``).
    """
    gen_kwargs, dec_kwargs = dict(gen_kwargs or {}), dict(dec_kwargs or {})
    for reserved in ("generator", "noise"):
        if reserved in gen_kwargs or reserved in dec_kwargs:
            raise ValueError(f"'{reserved}' is set by the harness from the per-sample seeds; remove it")
    gen_kwargs = {k: v for k, v in gen_kwargs.items() if v is not None}
    if dec_kwargs.get("cfg_interval") not in (None, "default"):
        dec_kwargs["cfg_interval"] = tuple(dec_kwargs["cfg_interval"])
    check_tokenizer = getattr(generator_model, "check_tokenizer", None)
    if check_tokenizer is not None:
        check_tokenizer(tokenizer.config)
    generator_model.eval()
    tokenizer.eval()

    def sample_fn(class_ids: Tensor, seeds: Tensor) -> tuple[Tensor, Tensor]:
        device = next(generator_model.parameters()).device
        token_rngs = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        indices = generator_model.generate(class_ids.to(device), generator=token_rngs, **gen_kwargs)
        size = tokenizer.config.image_size
        noise = torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(int(s)))
                             for s in seeds])
        return tokenizer.decode(indices.to(tokenizer.device), noise=noise, **dec_kwargs), indices

    return sample_fn
