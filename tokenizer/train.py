"""Train a FlowMo tokenizer: Stage 1A (mode matching), Stage 1B (mode seeking), flowmo.md §3-4,
or few-step decoding (stage=distill, :mod:`tokenizer.distill`).

    python -m tokenizer.train experiment=digits                      # CPU, minutes
    python -m tokenizer.train experiment=digits stage=1b init_from=<stage-1A run dir>
    python -m tokenizer.train experiment=digits_distill init_from=<stage-1B run dir>
    accelerate launch -m tokenizer.train experiment=imagenet_lo_stage1a

The run directory holds the resolved config, TensorBoard logs (tb/), reconstruction grids
(images/) and checkpoints (checkpoints/step_N/: training_state.pt + the EMA model as
config.json + model.safetensors). ``resume=auto`` (default) continues the latest checkpoint
exactly: model, EMA, optimizer, scheduler, every RNG, data position and step (the loop and
checkpoints are :mod:`runkit.training`'s; this module holds the objectives, data and monitoring).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from runkit.checkpoint import CheckpointManager
from runkit.cli import TRAINING_RULES, user_path
from runkit.ema import EMA
from runkit.fileio import atomic_write
from runkit.training import Trainer, done_line, open_training_run

from .config import DecodeDefaults, FlowMoConfig
from .distill import DistillSettings, distill_losses
from .loading import load_flowmo
from .losses import LossWeights, freeze, stage1a_losses, stage1b_losses
from .model import FlowMo

STAGES = ("1a", "1b", "distill")
TRAINING_DATA_FILE = "training_data.json"  # beside the exported weights, when the dataset records its sources
CPU_COMPILE_GAIN = FlowMo.cpu_training_compile_gain  # read once: tests replace FlowMo to catch early builds
FROZEN_ENCODER_STAGES = ("1b", "distill")
OPTION_RULES = {
    **TRAINING_RULES,
    "train.freeze_encoder_after": "int >= 0 or null",
    "loss.flow_weight": "float >= 0", "loss.perceptual_weight": "float >= 0", "loss.entropy_weight": "float >= 0",
    "loss.commitment_weight": "float >= 0", "loss.sample_loss_weight": "float >= 0",
    "loss.code_dropout": "float in [0, 1]", "loss.logit_normal_prob": "float in [0, 1]",
    "loss.sample_steps": "int >= 1", "loss.sample_cfg": "float >= 0",
    "log.images_every": "int >= 0", "log.val_every": "int >= 0", "log.num_images": "int >= 1",
    "log.num_val_images": "int >= 1", "log.eval_batch_size": "int >= 1", "log.decode_steps": "int >= 1 or null",
    "log.decode_cfg": "float >= 0 or null", "log.decode_seed": "int >= 0",
    "distill.steps": "int >= 1", "distill.data_weight": "float >= 0", "distill.teacher_weight": "float >= 0",
    "distill.teacher_steps": "int >= 1", "distill.teacher_cfg": "float >= 0",
}


# ---------------------------------------------------------------------------- model pieces
class TrainingObjective(nn.Module):
    """The model plus its loss, as one module so DDP and autocast wrap a single forward."""

    def __init__(self, model: FlowMo, stage: str, weights: LossWeights, loss_cfg: DictConfig,
                 perceptual: nn.Module | None, sample_perceptual: nn.Module | None,
                 distill: DistillSettings | None = None, teacher: FlowMo | None = None):
        super().__init__()
        self.model = model
        self.stage = stage
        self.weights = weights
        self.loss_cfg = loss_cfg
        self.perceptual = perceptual
        self.sample_perceptual = sample_perceptual
        self.distill = distill
        self.teacher = teacher

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        common = dict(code_dropout=self.loss_cfg.code_dropout, logit_normal_prob=self.loss_cfg.logit_normal_prob,
                      logit_normal_mean=self.loss_cfg.logit_normal_mean)
        if self.stage == "1a":
            return stage1a_losses(self.model, images, self.weights, self.perceptual, **common)
        if self.stage == "distill":
            return distill_losses(self.model, images, self.distill, self.sample_perceptual, self.teacher,
                                  self.weights, self.perceptual, checkpoint=self.loss_cfg.checkpoint_sampler,
                                  **common)
        return stage1b_losses(self.model, images, self.weights, self.sample_perceptual, self.perceptual,
                              sample_steps=self.loss_cfg.sample_steps, sample_cfg=self.loss_cfg.sample_cfg,
                              sample_grid=self.loss_cfg.sample_grid,
                              checkpoint=self.loss_cfg.checkpoint_sampler, **common)


def unused_parameter_names(model: FlowMo) -> list[str]:
    """Parameters no training loss reaches (the encoder's time/modulation/image readout and the
    decoder's code readout, which exist only for checkpoint compatibility).

    Found by one deterministic forward/backward of a single blank image; they are frozen so
    DDP does not wait for their gradients and Adam keeps no state for them.
    """
    size = model.config.image_size
    device = model.device
    images = torch.zeros(1, 3, size, size, device=device)
    model.zero_grad(set_to_none=True)
    code = model.encode(images)
    v = model.velocity(images, model.quantize(code).code, torch.full((1,), 0.5, device=device))
    (v.sum() + code.sum()).backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    return unused


def block_linear_weights(model: FlowMo) -> list[Tensor]:
    """Weights of every Linear inside the encoder's and decoder's transformer blocks."""
    return [m.weight for m in model.encoder.block_linears() + model.decoder.block_linears()]


def weight_norms(weights: list[Tensor]) -> Tensor:
    """Frobenius norms (N,) fp32 of N weight tensors."""
    return torch.stack([w.detach().float().norm() for w in weights]).cpu()


@torch.no_grad()
def restore_weight_norms(weights: list[Tensor], norms: Tensor) -> None:
    """Rescale each trainable weight back to its recorded Frobenius norm (in place, no host sync)."""
    for w, norm in zip(weights, norms.to(weights[0].device).unbind()):
        if w.requires_grad:
            w.mul_((norm / torch.linalg.vector_norm(w.float()).clamp_min(1e-12)).to(w.dtype))


def warmup_factor(warmup_steps: int) -> Any:
    """LambdaLR multiplier: linear warmup over ``warmup_steps`` optimizer steps, then constant."""
    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return factor


def build_perceptual(kind: str, weights_path: str | None, allow_random: bool) -> nn.Module | None:
    if kind == "none":
        return None
    from evaluation.perceptual import build_perceptual_loss

    return build_perceptual_loss(kind, weights_path, allow_random)


def loss_weights(loss_cfg: DictConfig) -> LossWeights:
    return LossWeights(flow=loss_cfg.flow_weight, perceptual=loss_cfg.perceptual_weight,
                       entropy=loss_cfg.entropy_weight, commitment=loss_cfg.commitment_weight,
                       sample=loss_cfg.sample_loss_weight)


def load_initial_weights(model: FlowMo, path: str, which: str, preset: str | None = None) -> None:
    """Stage 1B / distill start: copy weights (``ema`` export or ``raw`` training weights) of a trained
    tokenizer: a run, step or save_pretrained directory, or a released .pth (``preset`` names its config)."""
    if which == "ema":
        source = load_flowmo(path, config=preset)
        if source.config.architecture_hash() != model.config.architecture_hash():
            raise ValueError(f"init_from={path} holds a tokenizer with config {source.config.to_dict()}, which "
                             f"differs from tokenizer={model.config.to_dict()}: pick the matching tokenizer= config")
        model.load_state_dict(source.state_dict())
    elif which == "raw":
        step_dir = CheckpointManager(path).resolve_resume(path)
        state = CheckpointManager.load_training_state(step_dir)
        model.load_state_dict(state["model"])
    else:
        raise ValueError(f"init_weights must be 'ema' or 'raw', got {which!r}")


def _load_teacher(path: str, cfg: DictConfig, config: FlowMoConfig, device: torch.device) -> FlowMo:
    """The frozen teacher of stage=distill: the tokenizer ``init_from`` names, in eval mode."""
    teacher = FlowMo(config)
    load_initial_weights(teacher, path, cfg.init_weights, cfg.get("init_preset"))
    freeze(teacher)
    return teacher.to(device).eval()


# ---------------------------------------------------------------------------- the run
class TokenizerTrainer(Trainer):
    """The tokenizer's part of the loop: images in, the stage's objective, encoder freezing, the
    block-norm constraint, reconstruction grids and validation."""

    name = "tokenizer"

    def __init__(self, run: Any, model: FlowMo, ema: EMA, optimizer: Any, scheduler: Any, *, stage: str,
                 config: FlowMoConfig, dataset: Any, sampler: Any, norm_weights: list[Tensor], init_norms: Tensor,
                 val_images: Tensor | None) -> None:
        super().__init__(run, model, ema, optimizer, scheduler)
        self.progress_label = f"stage {stage}"
        self.stage, self.config, self.dataset, self.sampler = stage, config, dataset, sampler
        self.norm_weights, self.init_norms, self.val_images = norm_weights, init_norms, val_images
        self.encoder_frozen = False
        self.objective: nn.Module | None = None  # what wrapped wraps, re-prepared when the encoder freezes
        self.batches: Any = None
        self.val: dict[str, float] = {}

    def begin(self) -> None:
        from imagedata import infinite_batches

        self.batches = infinite_batches(self.dataset, self.cfg.train.batch_size, self.sampler,
                                        self.cfg.data.get("num_workers", 0))

    def micro_batch(self, micro: int) -> Tensor:
        images, _labels = next(self.batches)
        return images.to(self.accelerator.device, non_blocking=True)

    def compute_loss(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.wrapped(images)

    def freeze_encoder(self) -> None:
        """Freeze the encoder and drop its Adam moments (Adam skips parameters without grads)."""
        freeze(self.model.encoder)
        for p in self.model.encoder.parameters():
            self.optimizer.state.pop(p, None)
        self.encoder_frozen = True

    def before_step(self) -> None:
        after = self.cfg.train.freeze_encoder_after
        if self.stage == "1a" and after is not None and not self.encoder_frozen and self.step >= after:
            self.freeze_encoder()
            if self.accelerator.num_processes > 1:  # DDP must forget the encoder's gradients
                self.wrapped = self.accelerator.prepare_model(self.objective)
            self.accelerator.print(f"step {self.step}: encoder frozen")

    def after_update(self) -> None:
        if self.cfg.train.fix_block_norms:
            restore_weight_norms(self.norm_weights, self.init_norms)

    def monitor(self, last: bool) -> None:
        log, step = self.cfg.log, self.step
        if log.images_every and (step % log.images_every == 0 or last):
            _log_images(self.cfg, self.ema, self.ema_model, self.val_images, self.run.run_dir, self.writer, step)
        if log.val_every and (step % log.val_every == 0 or last):
            self.val = _validate(self.cfg, self.ema, self.ema_model, self.val_images, self.writer, step)

    def export_extras(self, directory: Path) -> None:
        """``training_data.json`` beside the weights when the dataset can say what it draws from
        (the photo corpus: its packages, versions, licences and files)."""
        record = getattr(self.dataset, "data_record", None)
        if record is not None:
            text = json.dumps(record(), indent=1)
            atomic_write(directory / TRAINING_DATA_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def extra_state(self) -> dict[str, Any]:
        return {"stage": self.stage, "encoder_frozen": self.encoder_frozen, "config": self.config.to_dict(),
                "architecture_hash": self.config.architecture_hash(), "sampler": self.sampler.state_dict(),
                "init_norms": self.init_norms}


def _check_resumable(saved: dict[str, Any], resume_dir: Path, config: FlowMoConfig, stage: str) -> None:
    if saved["architecture_hash"] != config.architecture_hash():
        raise ValueError(f"resume checkpoint {resume_dir} was trained with tokenizer config {saved['config']}, "
                         f"not {config.to_dict()}")
    if saved["stage"] != stage:
        raise ValueError(f"resume checkpoint {resume_dir} is from stage {saved['stage']}, this run is "
                         f"stage={stage}; use a new run directory (stage 1b starts with init_from=...)")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) one training stage as configured; returns a summary (step, losses, paths, val)."""
    from accelerate.utils import gather_object

    from imagedata import ResumableSampler, build_dataset

    stage = str(cfg.stage).lower()
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {cfg.stage!r}")
    config = FlowMoConfig.from_dict(OmegaConf.to_container(cfg.tokenizer, resolve=True))
    run = open_training_run(cfg, "tokenizer", OPTION_RULES, width=max(config.enc_hidden, config.dec_hidden),
                            cpu_compile_gain=CPU_COMPILE_GAIN)
    tcfg, lcfg, accelerator = cfg.train, cfg.loss, run.accelerator

    # --- model, EMA, norms
    distill = teacher = None
    if stage == "distill":
        distill = DistillSettings(**OmegaConf.to_container(cfg.distill, resolve=True))
        # The exported student decodes with the sampler it was trained through, by default.
        config.decode = DecodeDefaults(steps=distill.steps, cfg=1.0, schedule=distill.schedule,
                                       cfg_interval=config.decode.cfg_interval)
    model = FlowMo(config).to(accelerator.device)
    if stage in FROZEN_ENCODER_STAGES:
        if not cfg.get("init_from"):
            raise ValueError(f"stage={stage} starts from a trained tokenizer: set init_from=<run dir, step dir, "
                             "save_pretrained dir or released .pth with init_preset=>")
        source = str(user_path(cfg.init_from))
        if run.resume_dir is None:
            load_initial_weights(model, source, cfg.init_weights, cfg.get("init_preset"))
        if distill is not None and distill.needs_teacher:
            teacher = _load_teacher(source, cfg, config, accelerator.device)
    for name in unused_parameter_names(model):
        model.get_parameter(name).requires_grad_(False)
    norm_weights = block_linear_weights(model)
    ema = EMA(model, tcfg.ema_decay, tcfg.ema_every)
    if tcfg.gradient_checkpointing:
        model.set_gradient_checkpointing(True)

    # --- optimizer over every trained parameter (a frozen encoder keeps its slot, gets no grads)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tcfg.lr, betas=tuple(tcfg.betas), weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_factor(tcfg.warmup_steps))

    # --- data
    dataset = build_dataset(cfg.data, "train", config.image_size, train=True)
    sampler = ResumableSampler(len(dataset), seed=cfg.seed, shuffle=True,
                               num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    monitoring = run.is_main and bool(cfg.log.images_every or cfg.log.val_every)
    trainer = TokenizerTrainer(run, model, ema, optimizer, scheduler, stage=stage, config=config, dataset=dataset,
                               sampler=sampler, norm_weights=norm_weights, init_norms=weight_norms(norm_weights),
                               val_images=_fixed_val_images(cfg, config.image_size) if monitoring else None)

    # --- resume
    if run.saved is not None:
        _check_resumable(run.saved, run.resume_dir, config, stage)
        saved = trainer.load_saved()
        sampler.load_state_dict(saved["sampler"])
        trainer.init_norms, trainer.encoder_frozen = saved["init_norms"], saved["encoder_frozen"]
    if stage in FROZEN_ENCODER_STAGES or trainer.encoder_frozen:
        trainer.freeze_encoder()

    trainer.optimizer = accelerator.prepare_optimizer(optimizer)
    perceptual = build_perceptual(lcfg.perceptual, lcfg.get("perceptual_weights"), cfg.allow_random_weights)
    sample_perceptual = None
    if stage in FROZEN_ENCODER_STAGES:
        sample_perceptual = build_perceptual(lcfg.sample_perceptual, lcfg.get("sample_perceptual_weights"),
                                             cfg.allow_random_weights)
        if sample_perceptual is None:
            raise ValueError(f"stage={stage} needs a sample-level loss: set loss.sample_perceptual to "
                             "lpips|resnet50|mse")
    trainer.objective = TrainingObjective(model, stage, loss_weights(lcfg), lcfg, perceptual, sample_perceptual,
                                          distill, teacher).to(accelerator.device)
    trainer.wrapped = accelerator.prepare_model(trainer.objective)

    summary = trainer.fit()
    skipped = sorted(set(gather_object(list(dataset.skipped_files))))
    if skipped:
        accelerator.print(f"skipped {len(skipped)} unreadable training file(s), each replaced by the next readable "
                          f"one: {', '.join(skipped[:3])}" + (" ..." if len(skipped) > 3 else ""))
    grids = sorted((run.run_dir / "images").glob("step_*.png"))
    return {**summary, "images": str(grids[-1]) if grids else None, "val": trainer.val, "skipped": len(skipped)}


# ---------------------------------------------------------------------------- monitoring
def _fixed_val_images(cfg: DictConfig, image_size: int) -> Tensor:
    """``log.num_val_images`` validation images spread over the whole split, so over every class
    (fixed across the run), (N, 3, S, S)."""
    from imagedata import build_dataset
    from imagedata.subsets import evenly_spaced

    dataset = build_dataset(cfg.data, "val", image_size, train=False)
    return torch.stack([dataset[i][0] for i in evenly_spaced(len(dataset), cfg.log.num_val_images)])


def _reconstruct(cfg: DictConfig, ema: EMA, ema_model: FlowMo, images: Tensor) -> Tensor:
    """EMA reconstructions with a fixed sampler seed (never touches the global RNG)."""
    ema.copy_to(ema_model)
    device = ema_model.device
    generator = torch.Generator(device=device).manual_seed(cfg.log.decode_seed)
    outputs = []
    with torch.no_grad():
        for chunk in images.split(cfg.log.eval_batch_size):
            outputs.append(ema_model.reconstruct(chunk.to(device), steps=cfg.log.decode_steps, cfg=cfg.log.decode_cfg,
                                                 schedule=cfg.log.decode_schedule, generator=generator).cpu())
    return torch.cat(outputs)


def _log_images(cfg: DictConfig, ema: EMA, ema_model: FlowMo, images: Tensor, run_dir: Path, writer: Any,
                step: int) -> None:
    from runkit.images import make_grid_image, save_comparison_grid

    from imagedata.subsets import evenly_spaced

    shown = images[evenly_spaced(len(images), cfg.log.num_images)]
    recons = _reconstruct(cfg, ema, ema_model, shown)
    path = run_dir / "images" / f"step_{step:08d}.png"
    save_comparison_grid(shown, recons, path)
    grid = make_grid_image(torch.cat([shown, recons]), nrow=len(shown))
    writer.add_image("reconstructions", torch.from_numpy(_as_array(grid)).permute(2, 0, 1), step)


def _as_array(image: Any) -> Any:
    import numpy as np

    return np.array(image.convert("RGB"))


def _validate(cfg: DictConfig, ema: EMA, ema_model: FlowMo, images: Tensor, writer: Any, step: int) -> dict[str, float]:
    """PSNR (and LPIPS when ``log.val_lpips`` is set) of EMA reconstructions of the fixed val images."""
    from evaluation.metrics import psnr

    recons = _reconstruct(cfg, ema, ema_model, images)
    results = {"psnr": psnr(images, recons).mean().item()}
    line = f"step {step}: val PSNR {results['psnr']:.2f} dB"
    if cfg.log.val_lpips:
        from evaluation.metrics import LPIPSMetric, format_metric

        metric = LPIPSMetric(net="vgg", backbone_weights=cfg.log.get("lpips_vgg_weights"),
                             allow_random=cfg.allow_random_weights)
        results["lpips"] = metric(images, recons).mean().item()
        line += ", " + format_metric("LPIPS", results["lpips"], metric.calibrated)
    for name, value in results.items():
        writer.add_scalar(f"val/{name}", value, step)
    tqdm.write(line)
    return results


@hydra.main(version_base="1.3", config_path="../configs", config_name="tokenizer_train")
def main(cfg: DictConfig) -> None:
    summary = train(cfg)
    print(done_line(summary, reconstructions=summary["images"] or "none (log.images_every=0)"))


if __name__ == "__main__":
    main()
