"""Train a FlowMo tokenizer: Stage 1A (mode matching), Stage 1B (mode seeking), flowmo.md §3-4,
or few-step decoding (stage=distill, :mod:`tokenizer.distill`).

    python -m tokenizer.train experiment=digits                      # CPU, minutes
    python -m tokenizer.train experiment=digits stage=1b init_from=<stage-1A run dir>
    python -m tokenizer.train experiment=digits_distill init_from=app/weights/tokenizer
    accelerate launch -m tokenizer.train experiment=imagenet_lo_stage1a

The run directory holds the resolved config, TensorBoard logs (tb/), reconstruction grids
(images/) and checkpoints (checkpoints/step_N/: training_state.pt + the EMA model as
config.json + model.safetensors). ``resume=auto`` (default) continues the latest checkpoint
exactly: model, EMA, optimizer, scheduler, every RNG, data position and step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import EMA, CheckpointManager, capture_rng_state, open_run, restore_rng_state
from .config import DecodeDefaults, FlowMoConfig
from .distill import DistillSettings, distill_losses
from .loading import load_flowmo
from .losses import LossWeights, freeze, stage1a_losses, stage1b_losses
from .model import FlowMo
from .cli import TRAINING_RULES, check_numbers, output_directory, resolve_mixed_precision, user_path

STAGES = ("1a", "1b", "distill")
FROZEN_ENCODER_STAGES = ("1b", "distill")
OPTION_RULES = {
    **TRAINING_RULES,
    "train.max_nan_steps": "int >= 1", "train.freeze_encoder_after": "int >= 0 or null",
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


class TrainingDiverged(RuntimeError):
    """Raised after ``max_nan_steps`` consecutive non-finite steps (a checkpoint is written first)."""


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
    from .perceptual import build_perceptual_loss

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
@dataclass
class _RunState:
    step: int = 0
    nan_streak: int = 0
    encoder_frozen: bool = False
    losses: list[float] = field(default_factory=list)  # one per optimizer step (NaN when skipped)
    val: dict[str, float] = field(default_factory=dict)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) one training stage as configured; returns a summary (step, losses, paths, val)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, gather_object, set_seed

    from .data import ResumableSampler, build_dataset, infinite_batches

    check_numbers(cfg, OPTION_RULES)
    stage = str(cfg.stage).lower()
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {cfg.stage!r}")
    tcfg, lcfg = cfg.train, cfg.loss
    run_dir = output_directory(cfg.get("run_dir"), "run_dir")
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(tcfg.mixed_precision, tcfg.get("cpu", False)),
                              gradient_accumulation_steps=tcfg.grad_accum,
                              cpu=tcfg.get("cpu", False),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    is_main = accelerator.is_main_process
    set_seed(cfg.seed + accelerator.process_index)
    manager, resume_dir, saved = open_run(run_dir, cfg, "tokenizer", is_main, accelerator.wait_for_everyone)

    # --- model, EMA, norms
    config = FlowMoConfig.from_dict(OmegaConf.to_container(cfg.tokenizer, resolve=True))
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
        if resume_dir is None:
            load_initial_weights(model, source, cfg.init_weights, cfg.get("init_preset"))
        if distill is not None and distill.needs_teacher:
            teacher = _load_teacher(source, cfg, config, accelerator.device)
    for name in unused_parameter_names(model):
        model.get_parameter(name).requires_grad_(False)
    norm_weights = block_linear_weights(model)
    init_norms = weight_norms(norm_weights)
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
    monitoring = is_main and bool(cfg.log.images_every or cfg.log.val_every)
    val_images = _fixed_val_images(cfg, config.image_size) if monitoring else None

    # --- resume
    state = _RunState()
    rng_states = None
    if resume_dir is not None:
        if saved["architecture_hash"] != config.architecture_hash():
            raise ValueError(f"resume checkpoint {resume_dir} was trained with tokenizer config {saved['config']}, "
                             f"not {config.to_dict()}")
        if saved["stage"] != stage:
            raise ValueError(f"resume checkpoint {resume_dir} is from stage {saved['stage']}, this run is "
                             f"stage={stage}; use a new run directory (stage 1b starts with init_from=...)")
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        sampler.load_state_dict(saved["sampler"])
        init_norms = saved["init_norms"]
        state.step, state.nan_streak = saved["step"], saved["nan_streak"]
        state.encoder_frozen = saved["encoder_frozen"]
        rng_states = saved["rng"]
        accelerator.print(f"resumed from {resume_dir} at step {state.step}")
    if stage in FROZEN_ENCODER_STAGES or state.encoder_frozen:
        _freeze_encoder(model, optimizer, state)

    optimizer = accelerator.prepare_optimizer(optimizer)
    weights = loss_weights(lcfg)
    perceptual = build_perceptual(lcfg.perceptual, lcfg.get("perceptual_weights"), cfg.allow_random_weights)
    sample_perceptual = None
    if stage in FROZEN_ENCODER_STAGES:
        sample_perceptual = build_perceptual(lcfg.sample_perceptual, lcfg.get("sample_perceptual_weights"),
                                             cfg.allow_random_weights)
        if sample_perceptual is None:
            raise ValueError(f"stage={stage} needs a sample-level loss: set loss.sample_perceptual to "
                             "lpips|resnet50|mse")
    objective = TrainingObjective(model, stage, weights, lcfg, perceptual, sample_perceptual, distill,
                                  teacher).to(accelerator.device)
    wrapped = accelerator.prepare_model(objective)
    ema_model = ema.averaged_model(model) if is_main else None

    writer = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))

    def export(directory: Path) -> None:
        ema.copy_to(ema_model)
        ema_model.save_pretrained(directory)

    def save_checkpoint() -> Path | None:
        all_rng = gather_object([capture_rng_state()])
        path = None
        if is_main:
            training_state = {
                "trainer": "tokenizer", "run_config": OmegaConf.to_container(cfg, resolve=True),
                "step": state.step, "stage": stage,
                "nan_streak": state.nan_streak, "encoder_frozen": state.encoder_frozen, "config": config.to_dict(),
                "architecture_hash": config.architecture_hash(),
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "ema": ema.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "sampler": sampler.state_dict(), "init_norms": init_norms, "rng": all_rng,
            }
            path = manager.save(state.step, training_state, export=export)
        accelerator.wait_for_everyone()
        return path

    # RNG last: everything above may draw from it, the loop must continue the saved stream.
    if rng_states is not None:
        if len(rng_states) != accelerator.num_processes:
            raise ValueError(f"checkpoint was written by {len(rng_states)} processes, this run has "
                             f"{accelerator.num_processes}: exact resume needs the same number")
        restore_rng_state(rng_states[accelerator.process_index])

    batches = infinite_batches(dataset, tcfg.batch_size, sampler, cfg.data.get("num_workers", 0))
    progress = tqdm(total=tcfg.max_steps, initial=state.step, disable=not is_main, desc=f"stage {stage}",
                    dynamic_ncols=True)
    last_checkpoint = None
    if state.step >= tcfg.max_steps:
        accelerator.print(f"{run_dir} already finished step {state.step} (train.max_steps={tcfg.max_steps}); "
                          "raise train.max_steps (with resume_force=true) to train on")
    start_time = time.time()
    while state.step < tcfg.max_steps:
        if stage == "1a" and tcfg.freeze_encoder_after is not None and not state.encoder_frozen \
                and state.step >= tcfg.freeze_encoder_after:
            _freeze_encoder(model, optimizer, state)
            if accelerator.num_processes > 1:  # DDP must forget the encoder's gradients
                wrapped = accelerator.prepare_model(objective)
            accelerator.print(f"step {state.step}: encoder frozen")

        step_loss, terms = _optimizer_step(accelerator, wrapped, optimizer, batches, params, tcfg)
        state.step += 1
        if math.isfinite(step_loss):
            scheduler.step()
            if tcfg.fix_block_norms:
                restore_weight_norms(norm_weights, init_norms)
            ema.update(model, state.step)
            state.nan_streak = 0
        else:
            state.nan_streak += 1
            if is_main:
                tqdm.write(f"step {state.step}: non-finite loss/gradient, step skipped "
                           f"({state.nan_streak}/{tcfg.max_nan_steps} in a row)")
        state.losses.append(step_loss)
        progress.update(1)

        if is_main:
            if state.step % cfg.log.every == 0 or state.step == tcfg.max_steps:
                progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                for name, value in terms.items():
                    writer.add_scalar(f"train/{name}", value, state.step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], state.step)
                writer.add_scalar("train/steps_per_s", progress.n / max(time.time() - start_time, 1e-9), state.step)
                writer.add_scalar("train/skipped", float(not math.isfinite(step_loss)), state.step)
            # The last step always logs too, so a short run still ends with a grid and a val line.
            last = state.step == tcfg.max_steps
            if cfg.log.images_every and (state.step % cfg.log.images_every == 0 or last):
                _log_images(cfg, ema, ema_model, val_images, run_dir, writer, state.step)
            if cfg.log.val_every and (state.step % cfg.log.val_every == 0 or last):
                state.val = _validate(cfg, ema, ema_model, val_images, writer, state.step)

        if state.nan_streak >= tcfg.max_nan_steps:
            last_checkpoint = save_checkpoint()
            progress.close()
            raise TrainingDiverged(f"{state.nan_streak} consecutive steps with non-finite loss or gradients "
                                   f"(max_nan_steps={tcfg.max_nan_steps}) at step {state.step}: stopped. The last "
                                   f"finite weights are saved in {last_checkpoint}; lower train.lr, set "
                                   "train.grad_clip or check the data")
        if state.step % cfg.checkpoint.every == 0 or state.step == tcfg.max_steps:
            last_checkpoint = save_checkpoint()
    progress.close()
    if writer is not None:
        writer.close()
    skipped = sorted(set(gather_object(list(dataset.skipped_files))))
    if skipped:
        accelerator.print(f"skipped {len(skipped)} unreadable training file(s), each replaced by the next readable "
                          f"one: {', '.join(skipped[:3])}" + (" ..." if len(skipped) > 3 else ""))
    # A rerun of a finished run writes nothing new: it reports the checkpoint and grid already there.
    checkpoint = last_checkpoint or manager.latest()
    grids = sorted((run_dir / "images").glob("step_*.png"))
    return {"run_dir": str(run_dir), "step": state.step, "losses": state.losses,
            "checkpoint": str(checkpoint) if checkpoint else None, "images": str(grids[-1]) if grids else None,
            "val": state.val, "skipped": len(skipped)}


def _freeze_encoder(model: FlowMo, optimizer: torch.optim.Optimizer, state: _RunState) -> None:
    """Freeze the encoder and drop its Adam moments (Adam skips parameters without grads)."""
    freeze(model.encoder)
    for p in model.encoder.parameters():
        optimizer.state.pop(p, None)
    state.encoder_frozen = True


def _optimizer_step(accelerator: Any, wrapped: nn.Module, optimizer: Any, batches: Any, params: list[Tensor],
                    tcfg: DictConfig) -> tuple[float, dict[str, float]]:
    """grad_accum micro-batches, then one optimizer step unless the loss or gradient is non-finite.

    Returns (mean loss over micro-batches and processes, or NaN when skipped; mean terms).
    """
    sums: dict[str, Tensor] = {}
    for _ in range(tcfg.grad_accum):
        images, _labels = next(batches)
        images = images.to(accelerator.device, non_blocking=True)
        with accelerator.accumulate(wrapped):
            loss, terms = wrapped(images)
            accelerator.backward(loss)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value.float() / tcfg.grad_accum
    reduced = {name: accelerator.reduce(value, reduction="mean").item() for name, value in sums.items()}
    grad_norm = accelerator.clip_grad_norm_([p for p in params if p.grad is not None],
                                            tcfg.grad_clip if tcfg.grad_clip else float("inf"))
    step_loss = reduced["loss"]
    if not (math.isfinite(step_loss) and torch.isfinite(torch.as_tensor(grad_norm)).item()):
        optimizer.zero_grad(set_to_none=True)
        return float("nan"), reduced
    reduced["grad_norm"] = float(grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, reduced


# ---------------------------------------------------------------------------- monitoring
def _fixed_val_images(cfg: DictConfig, image_size: int) -> Tensor:
    """``log.num_val_images`` validation images spread over the whole split, so over every class
    (fixed across the run), (N, 3, S, S)."""
    from .data import build_dataset
    from .data.subsets import evenly_spaced

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
    from .data.subsets import evenly_spaced
    from .images import make_grid_image, save_comparison_grid

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
    from .metrics import psnr

    recons = _reconstruct(cfg, ema, ema_model, images)
    results = {"psnr": psnr(images, recons).mean().item()}
    line = f"step {step}: val PSNR {results['psnr']:.2f} dB"
    if cfg.log.val_lpips:
        from .metrics import LPIPSMetric, format_metric

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
    print(f"done: step {summary['step']}; checkpoint {summary['checkpoint']}; "
          f"reconstructions {summary['images'] or 'none (log.images_every=0)'}")


if __name__ == "__main__":
    main()
