"""Train a MaskGIT or AR generator on a token cache (one loop for both).

    python -m generator.train experiment=digits_maskgit
    python -m generator.train generator=ar_b tokens.cache=tokens/imagenet_lo tokenizer.checkpoint=...
    accelerate launch --multi_gpu --num_processes 8 -m generator.train experiment=imagenet_lo_maskgit

The loop, checkpoints and exact resume are :mod:`runkit.training`'s; this module holds the token
data, the optimizer and schedule, and the sample grids. Every checkpoint directory also holds the
EMA generator as ``save_pretrained`` writes it, so ``generator.load_generator(run_dir)`` loads the
newest one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from runkit.cli import TRAINING_RULES, user_path
from runkit.ema import EMA
from runkit.runs import config_differences
from runkit.training import Trainer, done_line, open_training_run

from .base import GeneratorModel, build_generator
from .config import GeneratorConfig
from .pipeline import Pipeline
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


class GeneratorTrainer(Trainer):
    """The generator's part of the loop: cached token batches in, the model's training loss, sample grids."""

    name = "generator"
    shown_terms = ("accuracy",)

    def __init__(self, run: Any, model: GeneratorModel, ema: EMA, optimizer: Any, scheduler: Any, *,
                 config: GeneratorConfig, batches: TokenBatches) -> None:
        super().__init__(run, model, ema, optimizer, scheduler)
        self.progress_label = f"train {config.model}"
        self.config, self.batches = config, batches
        self.tokenizer: Any = None  # loaded for the first sample grid

    def micro_batch(self, micro: int) -> tuple[Tensor, Tensor]:
        # Batches are indexed by position, so a resumed run reads exactly the ones it would have.
        indices, labels = self.batches.batch(self.step * self.cfg.train.grad_accum + micro)
        return indices.to(self.accelerator.device), labels.to(self.accelerator.device)

    def compute_loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.model.training_loss(*batch, forward=self.wrapped)
        return out.loss, {"loss": out.loss, "accuracy": out.accuracy}

    def monitor(self, last: bool) -> None:
        cfg = self.cfg
        if not (cfg.log.samples_every and (self.step % cfg.log.samples_every == 0 or last)):
            return
        if self.tokenizer is None and cfg.tokenizer.checkpoint:
            self.tokenizer = load_tokenizer(cfg.tokenizer, self.accelerator.device)
            self.ema_model.check_tokenizer(self.tokenizer.config)
        if self.tokenizer is not None:
            self.ema.copy_to(self.ema_model)
            save_sample_grid(self.ema_model, self.tokenizer, cfg.log,
                             self.run.run_dir / "samples" / f"step_{self.step:08d}.png", self.writer, self.step)

    def extra_state(self) -> dict[str, Any]:
        return {"config": self.config.to_dict()}

    def training_data(self) -> dict[str, Any]:
        """The token cache a model card names: what it encodes (dataset:split), how many images and views."""
        m = self.batches.cache.manifest
        return {"token_cache": m.source, "images": m.num_items, "views": list(m.augmentations),
                "classes": m.num_classes, "tokenizer": self.cfg.tokenizer.checkpoint}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) one generator training as configured; returns a summary."""
    run = open_training_run(cfg, "generator", OPTION_RULES, width=cfg.generator.width,
                            cpu_compile_gain=GeneratorModel.cpu_training_compile_gain)
    tcfg, accelerator = cfg.train, run.accelerator

    # --- data
    cache = TokenCache.load(resolve_token_cache(cfg, run.is_main, accelerator.wait_for_everyone))
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
    trainer = GeneratorTrainer(run, model, ema, optimizer, scheduler, config=config, batches=batches)
    if run.saved is not None:
        # Checkpoints from before the tokenizer fingerprint was recorded lack that key; the attention backend
        # is a runtime choice (absent from older checkpoints), free to change on resume.
        saved_config = {"tokenizer_fingerprint": config.tokenizer_fingerprint, **run.saved["config"]}
        changed = config_differences(saved_config, config.to_dict(), free=("attention_backend",))
        if changed:
            raise ValueError(f"checkpoint {run.resume_dir} was trained with another generator config or token "
                             f"cache ({', '.join(changed)} differ); use resume=none or a new run_dir")
        trainer.load_saved()
    trainer.wrapped, trainer.optimizer = accelerator.prepare(model, optimizer)
    num_params = sum(p.numel() for p in model.parameters())
    accelerator.print(f"{config.model}: {num_params / 1e6:.2f} M parameters, {config.seq_len} indices of vocab "
                      f"{config.vocab_size}, {config.num_classes} classes; {len(cache)} cached images")

    summary = trainer.fit()
    grids = sorted((run.run_dir / "samples").glob("step_*.png"))
    return {**summary, "num_parameters": num_params, "samples": str(grids[-1]) if grids else None}


def save_sample_grid(model: GeneratorModel, tokenizer: Any, log_cfg: DictConfig, path: Path, writer: Any = None,
                     step: int = 0) -> Path:
    """One row per class (the first ``grid_classes``), ``samples_per_class`` columns, labelled by class name."""
    from runkit.images import make_grid_image, save_image_grid

    num_classes = min(model.num_classes, log_cfg.grid_classes)
    class_ids = torch.arange(num_classes).repeat_interleave(log_cfg.samples_per_class).tolist()
    images = Pipeline(model, tokenizer).generate(
        class_ids, seed=log_cfg.sample_seed, decode_steps=log_cfg.decode_steps, decode_cfg=log_cfg.decode_cfg,
        num_steps=log_cfg.sample_steps, cfg_scale=log_cfg.cfg_scale, temperature=log_cfg.temperature).images
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
    samples = summary["samples"] or "none (they need tokenizer.checkpoint=)"
    print(done_line(summary, samples=samples))


if __name__ == "__main__":
    main()
