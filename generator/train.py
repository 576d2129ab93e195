"""Train a MaskGIT or AR generator on a token cache (one loop for both).

    python -m generator.train experiment=digits_maskgit
    python -m generator.train generator=ar_b tokens.cache=tokens/imagenet_lo tokenizer.checkpoint=...
    accelerate launch --multi_gpu --num_processes 8 -m generator.train experiment=imagenet_lo_maskgit

Setup -> data -> loop (accumulate, step, EMA, log) -> sample grids -> atomic checkpoints.
Every checkpoint directory also holds the EMA generator as ``save_pretrained`` writes it, so
``generator.load_generator(run_dir)`` loads the newest one.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from tokenizer.checkpoint import EMA, capture_rng_state, open_run, restore_rng_state
from tokenizer.cli import TRAINING_RULES, check_numbers, output_directory, resolve_mixed_precision, user_path

from .base import GeneratorModel, build_generator
from .config import GeneratorConfig
from .tokenize_dataset import build_token_cache, default_cache_dir, load_tokenizer
from .tokens import MANIFEST_FILE, TokenBatches, TokenCache, encoder_fingerprint, read_manifest

OPTION_RULES = {
    **TRAINING_RULES,
    "train.min_lr_ratio": "float in [0, 1]",
    "tokens.shard_size": "int >= 1", "tokens.batch_size": "int >= 1", "tokens.num_workers": "int >= 0",
    "log.samples_every": "int >= 0", "log.grid_classes": "int >= 1", "log.samples_per_class": "int >= 1",
    "log.sample_steps": "int >= 1 or null", "log.cfg_scale": "float >= 0", "log.temperature": "float > 0",
    "log.sample_seed": "int >= 0", "log.decode_steps": "int >= 1 or null", "log.decode_cfg": "float >= 0 or null",
}


def generator_config(model_cfg: dict[str, Any], cache: TokenCache) -> GeneratorConfig:
    """Architecture from the config group, data-derived sizes from the token cache manifest."""
    m = cache.manifest
    fields = dict(model_cfg)
    fields.update(seq_len=m.num_indices, vocab_size=m.vocab_size, num_classes=m.num_classes,
                  class_names=list(m.class_names), tokenizer_hash=m.tokenizer_hash,
                  tokenizer_fingerprint=m.encoder_fingerprint or None)
    return GeneratorConfig.from_dict(fields)


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then a half cosine down to ``min_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and embedding tables only; none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def resolve_token_cache(cfg: DictConfig, is_main: bool, wait: Any) -> Path:
    """``tokens.cache``, or the default cache of (data, tokenizer), built by the main process if missing."""
    tcfg = cfg.tokens
    if tcfg.cache:
        path = user_path(tcfg.cache)
        if not (path / MANIFEST_FILE).is_file():
            raise FileNotFoundError(f"tokens.cache={tcfg.cache}: {path / MANIFEST_FILE} not found; build it with "
                                    "`python -m generator.tokenize_dataset` or set tokens.cache=null to build the "
                                    "default cache from data= and tokenizer.checkpoint=")
        recorded = read_manifest(path).encoder_fingerprint
        if recorded and cfg.tokenizer.checkpoint:
            current = encoder_fingerprint(load_tokenizer(cfg.tokenizer))
            if current != recorded:
                raise ValueError(f"tokens.cache={tcfg.cache} was made by another tokenizer's encoder (fingerprint "
                                 f"{recorded}, tokenizer.checkpoint has {current}): its tokens would not decode "
                                 "correctly; rebuild the cache or point at the matching tokenizer")
        return path
    tokenizer = load_tokenizer(cfg.tokenizer)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    path = default_cache_dir(tcfg.cache_root, data_cfg["name"], "train", tokenizer, tcfg.flip, tcfg.jitter_views,
                             tcfg.jitter_strength)
    if is_main and not ((path / MANIFEST_FILE).is_file() and read_manifest(path).complete):
        print(f"building the token cache {path} (once per dataset and tokenizer)")
        build_token_cache(data_cfg, tokenizer, path, split="train", flip=tcfg.flip,
                          jitter_views=tcfg.jitter_views, jitter_strength=tcfg.jitter_strength,
                          shard_size=tcfg.shard_size,
                          batch_size=tcfg.batch_size, num_workers=tcfg.num_workers)
    wait()
    return path


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) one generator training as configured; returns a summary."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object, set_seed

    check_numbers(cfg, OPTION_RULES)
    tcfg = cfg.train
    run_dir = output_directory(cfg.get("run_dir"), "run_dir")
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(tcfg.mixed_precision, tcfg.get("cpu", False)),
                              cpu=tcfg.get("cpu", False))
    is_main = accelerator.is_main_process
    set_seed(cfg.seed + accelerator.process_index)
    manager, resume_dir, state = open_run(run_dir, cfg, "generator", is_main, accelerator.wait_for_everyone)

    # --- data
    cache = TokenCache.load(resolve_token_cache(cfg, is_main, accelerator.wait_for_everyone))
    batches = TokenBatches(cache, tcfg.batch_size, seed=cfg.seed, rank=accelerator.process_index,
                           world_size=accelerator.num_processes)

    # --- model, EMA, optimizer
    config = generator_config(OmegaConf.to_container(cfg.generator, resolve=True), cache)
    model = build_generator(config).to(accelerator.device)
    model.set_attention_backend(cfg.attention_backend)
    model.set_gradient_checkpointing(tcfg.gradient_checkpointing)
    ema = EMA(model, tcfg.ema_decay, tcfg.ema_every)
    optimizer = torch.optim.AdamW(parameter_groups(model, tcfg.weight_decay), lr=tcfg.lr, betas=tuple(tcfg.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, tcfg.warmup_steps, tcfg.max_steps, tcfg.min_lr_ratio))
    step, losses, rng_states = 0, [], None
    if resume_dir is not None:
        # Checkpoints from before the tokenizer fingerprint was recorded lack that key.
        saved_config = {"tokenizer_fingerprint": config.tokenizer_fingerprint, **state["config"]}
        if saved_config != config.to_dict():
            raise ValueError(f"checkpoint {resume_dir} was trained with another generator config or token cache; "
                             "use resume=none or a new run_dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        step, losses, rng_states = state["step"], list(state["losses"]), state["rng"]
        accelerator.print(f"resumed from {resume_dir} at step {step}")
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    ema_model = ema.averaged_model(model)
    num_params = sum(p.numel() for p in model.parameters())
    accelerator.print(f"{config.model}: {num_params / 1e6:.2f} M parameters, {config.seq_len} indices of vocab "
                      f"{config.vocab_size}, {config.num_classes} classes; {len(cache)} cached images")

    writer = tokenizer = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))

    def save_checkpoint() -> None:
        all_rng = gather_object([capture_rng_state()])
        if is_main:
            training_state = {"trainer": "generator", "run_config": OmegaConf.to_container(cfg, resolve=True),
                              "step": step, "losses": losses,
                              "config": config.to_dict(),
                              "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                              "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "rng": all_rng}
            manager.save(step, training_state, export=lambda d: (ema.copy_to(ema_model), ema_model.save_pretrained(d)))
        accelerator.wait_for_everyone()

    # RNG last: the setup above draws from it; the loop must continue the saved stream.
    if rng_states is not None:
        if len(rng_states) != accelerator.num_processes:
            raise ValueError(f"checkpoint was written by {len(rng_states)} processes, this run has "
                             f"{accelerator.num_processes}: exact resume needs the same number")
        restore_rng_state(rng_states[accelerator.process_index])

    progress = tqdm(total=tcfg.max_steps, initial=step, disable=not is_main, desc=f"train {config.model}",
                    dynamic_ncols=True)
    if step >= tcfg.max_steps:
        accelerator.print(f"{run_dir} already finished step {step} (train.max_steps={tcfg.max_steps}); "
                          "raise train.max_steps (with resume_force=true) to train on")
    start = time.time()
    while step < tcfg.max_steps:
        wrapped.train()
        loss_sum = accuracy_sum = 0.0
        for micro in range(tcfg.grad_accum):
            indices, labels = batches.batch(step * tcfg.grad_accum + micro)
            indices, labels = indices.to(accelerator.device), labels.to(accelerator.device)
            sync = micro == tcfg.grad_accum - 1
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            with contextlib.nullcontext() if sync else accelerator.no_sync(wrapped):
                out = model.training_loss(indices, labels, forward=wrapped)
                accelerator.backward(out.loss / tcfg.grad_accum)
            loss_sum += out.loss.detach() / tcfg.grad_accum
            accuracy_sum += out.accuracy.detach() / tcfg.grad_accum
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), tcfg.grad_clip or float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        ema.update(model, step)
        loss = accelerator.reduce(loss_sum, reduction="mean").item()
        losses.append(loss)
        progress.update(1)
        if step % cfg.log.every == 0 or step == tcfg.max_steps:
            accuracy = accelerator.reduce(accuracy_sum, reduction="mean").item()
            progress.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if writer is not None:
                for name, value in (("loss", loss), ("accuracy", accuracy), ("grad_norm", float(grad_norm)),
                                    ("lr", scheduler.get_last_lr()[0]),
                                    ("steps_per_s", step / max(1e-9, time.time() - start))):
                    writer.add_scalar(f"train/{name}", value, step)
        if cfg.log.samples_every and (step % cfg.log.samples_every == 0 or step == tcfg.max_steps) and is_main:
            if tokenizer is None and cfg.tokenizer.checkpoint:
                tokenizer = load_tokenizer(cfg.tokenizer, accelerator.device)
                ema_model.check_tokenizer(tokenizer.config)
            if tokenizer is not None:
                ema.copy_to(ema_model)
                save_sample_grid(ema_model, tokenizer, cfg.log, run_dir / "samples" / f"step_{step:08d}.png",
                                 writer, step)
        if step % cfg.checkpoint.every == 0 or step == tcfg.max_steps:
            save_checkpoint()
    progress.close()
    if writer is not None:
        writer.close()
    checkpoint = manager.latest()
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    return {"run_dir": str(run_dir), "step": step, "losses": losses, "num_parameters": num_params,
            "checkpoint": str(checkpoint) if checkpoint else None, "samples": str(grids[-1]) if grids else None}


@torch.no_grad()
def save_sample_grid(model: GeneratorModel, tokenizer: Any, log_cfg: DictConfig, path: Path, writer: Any = None,
                     step: int = 0) -> Path:
    """One row per class (the first ``grid_classes``), ``samples_per_class`` columns, labelled by class name."""
    from tokenizer.images import make_grid_image, save_image_grid

    num_classes = min(model.num_classes, log_cfg.grid_classes)
    class_ids = torch.arange(num_classes).repeat_interleave(log_cfg.samples_per_class).tolist()
    device = model.device
    generator = torch.Generator(device).manual_seed(log_cfg.sample_seed)
    indices = model.generate(class_ids, num_steps=log_cfg.sample_steps, cfg_scale=log_cfg.cfg_scale,
                             temperature=log_cfg.temperature, generator=generator)
    images = tokenizer.decode(indices, steps=log_cfg.decode_steps, cfg=log_cfg.decode_cfg, generator=generator)
    labels = [model.class_names[c] for c in class_ids]
    save_image_grid(images, path, nrow=log_cfg.samples_per_class, labels=labels)
    if writer is not None:
        import numpy as np

        grid = np.asarray(make_grid_image(images, nrow=log_cfg.samples_per_class, labels=labels))
        writer.add_image("samples", grid, step, dataformats="HWC")
    return path


@hydra.main(version_base="1.3", config_path="../configs", config_name="generator_train")
def main(cfg: DictConfig) -> None:
    summary = train(cfg)
    print(f"done: step {summary['step']}, final loss {summary['losses'][-1]:.4f}; checkpoint "
          f"{summary['checkpoint']}; samples {summary['samples'] or 'none (they need tokenizer.checkpoint=)'}")


if __name__ == "__main__":
    main()
