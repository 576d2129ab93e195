"""The training skeleton both trainers run: accelerate setup, the run folder, the optimizer step
with gradient accumulation, the non-finite-step policy, the experiment tracker (``log.with``,
:mod:`runkit.tracking`), the progress bar, checkpoints that resume exactly (model, EMA, optimizer,
scheduler, every RNG, step) and export the EMA model with its model card, compile and precision
(:mod:`runkit.acceleration`) and the run's ``summary.json`` (its measured speed).

A trainer subclasses :class:`Trainer` with its objective (:meth:`~Trainer.compute_loss`), its data
(:meth:`~Trainer.micro_batch`) and, optionally, what it does around a step and what else its
checkpoints hold; ``tokenizer.train`` and ``generator.train`` keep only that, their data and config.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import acceleration
from .acceleration import Choice
from .checkpoint import CheckpointManager
from .cli import check_numbers, command_line, output_directory
from .fileio import atomic_write
from .ema import EMA
from .rng import capture_rng_state, restore_rng_state
from .runs import open_run
from .tracking import RunLogger, tracker_name

LossFn = Callable[[Any], "tuple[Tensor, Mapping[str, Tensor]]"]
SUMMARY_FILE = "summary.json"
WARMUP_STEPS = 3  # the first steps of each invocation: compilation, allocator and kernel selection


class TrainingDiverged(RuntimeError):
    """Raised after ``max_nan_steps`` consecutive non-finite steps (a checkpoint is written first)."""


@dataclass
class Run:
    """An opened training run: its options, folder, accelerator, checkpoints and the state it resumes."""

    cfg: Any
    run_dir: Path
    accelerator: Any
    manager: CheckpointManager
    resume_dir: Path | None
    saved: dict[str, Any] | None  # the resume checkpoint's training state, checked against cfg
    compile: Choice  # compile the model's transformer blocks (runkit.acceleration)
    precision: Choice  # accelerate's mixed_precision and why
    tracker: str | None  # log.with: the accelerate tracker scalars and images go to (None: none)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


def open_training_run(cfg: Any, trainer: str, rules: Mapping[str, str], width: int | None = None,
                      cpu_compile_gain: bool = True) -> Run:
    """Check the numeric options, choose precision and compilation (``width``: the model's transformer
    width, which the CPU precision rule reads; ``cpu_compile_gain``: whether its training step measured
    faster compiled on a CPU, see :mod:`runkit.acceleration`), start accelerate (mixed precision, gradient
    accumulation, a seed per process) and open the run folder (:func:`runkit.runs.open_run`), before
    any model is built. The run's first line says what was chosen and why."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    check_numbers(cfg, rules)
    tcfg = cfg.train
    run_dir = output_directory(cfg.get("run_dir"), "run_dir")
    tracker = tracker_name(cfg.log)  # an unknown or uninstalled tracker fails before any work
    cpu = tcfg.get("cpu", False)
    device = "cpu" if cpu or not torch.cuda.is_available() else "cuda"
    precision = acceleration.choose_precision(tcfg.mixed_precision, device, width)
    requested_compile = tcfg.get("compile", "auto")
    acceleration.choose_compile(requested_compile, device, None)  # a bad value fails before any work
    accelerator = Accelerator(mixed_precision=precision.value, gradient_accumulation_steps=tcfg.grad_accum, cpu=cpu,
                              log_with=tracker, project_dir=str(run_dir))
    set_seed(cfg.seed + accelerator.process_index)
    manager, resume_dir, saved = open_run(run_dir, cfg, trainer, accelerator.is_main_process,
                                          accelerator.wait_for_everyone)
    steps_left = tcfg.max_steps - (saved["step"] if saved else 0)
    compile_choice = acceleration.choose_compile(requested_compile, accelerator.device, steps_left,
                                                 unit="steps to train", cpu_gain=cpu_compile_gain)
    accelerator.print(acceleration.describe(compile_choice, precision))
    return Run(cfg, run_dir, accelerator, manager, resume_dir, saved, compile_choice, precision, tracker)


def done_line(summary: Mapping[str, Any], **outputs: str) -> str:
    """The lines a training command ends with: step, final loss, checkpoint and its other outputs, then
    the measured speed (``summary.json``)."""
    losses = [loss for loss in summary["losses"] if math.isfinite(loss)]
    parts = [f"done: step {summary['step']}" + (f", final loss {losses[-1]:.4f}" if losses else ""),
             f"checkpoint {summary['checkpoint']}", *(f"{name} {value}" for name, value in outputs.items())]
    return "; ".join(parts) + "\n" + speed_line(summary.get("speed", {}))


def optimizer_step(accelerator: Any, wrapped: nn.Module, optimizer: Any, micro_batches: Iterable[Any],
                   compute_loss: LossFn, params: list[Tensor],
                   grad_clip: float | None) -> tuple[float, dict[str, float]]:
    """The micro-batches' gradients accumulated (all-reduced once, on the last), then one optimizer
    step unless the loss or the gradient norm is non-finite.

    ``compute_loss(batch)`` returns (loss, terms) with ``"loss"`` among the terms. Returns the mean
    loss over micro-batches and processes, or NaN when the step was skipped, and the mean terms.
    """
    sums: dict[str, Tensor] = {}
    for batch in micro_batches:
        with accelerator.accumulate(wrapped):
            loss, terms = compute_loss(batch)
            accelerator.backward(loss)  # divided by the accumulation count inside
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float() / accelerator.gradient_accumulation_steps
    reduced = {name: accelerator.reduce(value, reduction="mean").item() for name, value in sums.items()}
    grad_norm = accelerator.clip_grad_norm_([p for p in params if p.grad is not None],
                                            grad_clip if grad_clip else float("inf"))
    step_loss = reduced["loss"]
    if not (math.isfinite(step_loss) and torch.isfinite(torch.as_tensor(grad_norm)).item()):
        optimizer.zero_grad(set_to_none=True)
        return float("nan"), reduced
    reduced["grad_norm"] = float(grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, reduced


class StepClock:
    """Seconds spent in training steps (forward, backward, update, EMA), apart from validation, image
    grids and checkpoints; the first :data:`WARMUP_STEPS` steps of an invocation (compilation,
    allocator, kernel selection) are counted as warm-up, the rest give the steady-state speed. It also
    counts the graphs torch.compile builds, so a recompilation after the warm-up shows."""

    def __init__(self, first_step: int) -> None:
        self.first_step, self.steps = first_step, 0
        self.warmup_s = self.steady_s = 0.0
        self._began = time.perf_counter()
        self._graphs_at_start = self._graphs_after_warmup = compiled_graphs()
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> None:
        elapsed = time.perf_counter() - self._started
        self.steps += 1
        if self.steps <= WARMUP_STEPS:
            self.warmup_s += elapsed
            self._graphs_after_warmup = compiled_graphs()
        else:
            self.steady_s += elapsed

    def steps_per_s(self) -> float:
        """Steady-state steps per second so far (over the warm-up steps while there are no others)."""
        if self.steps > WARMUP_STEPS:
            return (self.steps - WARMUP_STEPS) / max(self.steady_s, 1e-9)
        return self.steps / max(self.warmup_s, 1e-9)

    def summary(self, step: int, run: Run) -> dict[str, Any]:
        graphs = compiled_graphs()
        return {"steps_per_s": round(self.steps_per_s(), 4),
                "steady_steps": max(0, self.steps - WARMUP_STEPS), "warmup_steps": min(self.steps, WARMUP_STEPS),
                "warmup_s": round(self.warmup_s, 2), "wall_s": round(time.perf_counter() - self._began, 2),
                "compile": bool(run.compile.value), "compile_reason": run.compile.reason,
                "mixed_precision": run.precision.value, "precision_reason": run.precision.reason,
                "device": device_name(run.accelerator.device), "processes": run.accelerator.num_processes,
                "steps": self.steps, "first_step": self.first_step, "last_step": step,
                "compiled_graphs": graphs - self._graphs_at_start,
                "recompiles_after_warmup": graphs - self._graphs_after_warmup}


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (dynamo's counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def device_name(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads"


def speed_line(speed: Mapping[str, Any]) -> str:
    """The speed summary a training command prints last (what ``summary.json`` holds)."""
    if not speed.get("steps"):
        return "speed: no steps trained in this invocation"
    precision = "fp32" if speed["mixed_precision"] == "no" else speed["mixed_precision"]
    return (f"speed: {speed['steps_per_s']:.3f} steps/s at steady state ({speed['steady_steps']} steps, after "
            f"{speed['warmup_steps']} warm-up steps taking {speed['warmup_s']:.1f} s); compile "
            f"{'on' if speed['compile'] else 'off'}, precision {precision}, {speed['device']}; "
            f"recompilations after warm-up: {speed['recompiles_after_warmup']} ({SUMMARY_FILE} in the run folder)")


class Trainer:
    """One training run's loop. Set :attr:`wrapped` (the prepared module ``compute_loss`` calls) and
    :attr:`optimizer` (prepared) before :meth:`fit`; call :meth:`load_saved` first when resuming."""

    name = ""  # "tokenizer" | "generator": recorded in checkpoints, so a run never resumes the other's
    progress_label = "train"
    shown_terms: tuple[str, ...] = ()  # terms shown beside the loss on the progress bar

    def __init__(self, run: Run, model: nn.Module, ema: EMA, optimizer: Any, scheduler: Any) -> None:
        self.run, self.cfg, self.accelerator = run, run.cfg, run.accelerator
        self.model, self.ema, self.optimizer, self.scheduler = model, ema, optimizer, scheduler
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.wrapped: nn.Module | None = None
        self.ema_model: nn.Module | None = None  # main process only: exports, images, samples
        self.writer: RunLogger | None = None  # main process only: the tracker (add_scalar / add_image)
        self.step, self.nan_streak = 0, 0
        self.losses: list[float] = []  # one per optimizer step since the run began (NaN when skipped)
        self._rng_states: list[Any] | None = None

    # ------------------------------------------------------------------ hooks
    def micro_batch(self, micro: int) -> Any:
        """Micro-batch ``micro`` of the coming optimizer step, on the device."""
        raise NotImplementedError

    def compute_loss(self, batch: Any) -> tuple[Tensor, Mapping[str, Tensor]]:
        """(loss, {"loss": ..., other scalar terms}) of one micro-batch, through :attr:`wrapped`."""
        raise NotImplementedError

    def begin(self) -> None:
        """Once the RNG streams are restored: build what draws from them (data iterators)."""

    def before_step(self) -> None:
        """Before each optimizer step (e.g. freezing part of the model at a configured step)."""

    def after_update(self) -> None:
        """After each applied update, before the EMA sees the weights (e.g. weight-norm constraints)."""

    def monitor(self, last: bool) -> None:
        """Main process, after each step's logging: image grids, validation, samples."""

    def extra_state(self) -> dict[str, Any]:
        """What else a checkpoint holds (the trainer's own config and data position)."""
        return {}

    def training_data(self) -> Any:
        """What the model learns from, as its model card records it (default: the run's ``data`` options)."""
        from omegaconf import OmegaConf

        data = self.cfg.get("data")
        return OmegaConf.to_container(data, resolve=True) if data is not None else None

    # ------------------------------------------------------------------ state
    def load_saved(self) -> dict[str, Any] | None:
        """Load the resume checkpoint's model, EMA, optimizer, scheduler, step and losses (RNG comes
        last, in :meth:`fit`); returns its training state for the trainer's own keys, or None."""
        saved = self.run.saved
        if saved is None:
            return None
        self.model.load_state_dict(saved["model"])
        self.ema.load_state_dict(saved["ema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        # Older checkpoints lack the keys the other trainer recorded.
        self.step, self.nan_streak = saved["step"], saved.get("nan_streak", 0)
        self.losses = list(saved.get("losses", []))
        self._rng_states = saved["rng"]
        self.accelerator.print(f"resumed from {self.run.resume_dir} at step {self.step}")
        return saved

    def save_checkpoint(self) -> Path | None:
        """An atomic checkpoint of this step (every process takes part: the RNG states are gathered)."""
        from accelerate.utils import gather_object
        from omegaconf import OmegaConf

        all_rng = gather_object([capture_rng_state()])
        path = None
        if self.run.is_main:
            state = {"trainer": self.name, "run_config": OmegaConf.to_container(self.cfg, resolve=True),
                     "step": self.step, "nan_streak": self.nan_streak, "losses": self.losses,
                     "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                     "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "rng": all_rng, **self.extra_state()}
            path = self.run.manager.save(self.step, state, export=self._export)
        self.accelerator.wait_for_everyone()
        return path

    def export_extras(self, directory: Path) -> None:
        """Files written beside the exported weights of every checkpoint (default: none)."""

    def training_record(self) -> dict[str, Any]:
        """How the exported weights were made, kept in their ``config.extra["training"]`` for the model card
        (the EMA copy's config only, so the training config a resume compares with is untouched)."""
        return {"data": self.training_data(), "command": command_line(f"{self.name}.train"), "step": self.step,
                "quality": self.writer.card_quality() if self.writer is not None else {}}

    def _export(self, directory: Path) -> None:
        self.ema.copy_to(self.ema_model)
        self.ema_model.config.extra["training"] = self.training_record()
        self.ema_model.save_pretrained(directory)
        self.export_extras(directory)

    def _restore_rng(self) -> None:
        # Last of all: setup draws from the RNGs; the loop must continue the saved streams.
        if self._rng_states is None:
            return
        if len(self._rng_states) != self.accelerator.num_processes:
            raise ValueError(f"checkpoint was written by {len(self._rng_states)} processes, this run has "
                             f"{self.accelerator.num_processes}: exact resume needs the same number")
        restore_rng_state(self._rng_states[self.accelerator.process_index])

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train to ``train.max_steps``; returns run_dir, step, losses, the last checkpoint and the speed
        summary (also written to ``summary.json`` in the run folder, see :class:`StepClock`)."""
        from omegaconf import OmegaConf

        run = self.run
        if run.is_main:
            self.writer = RunLogger.start(self.accelerator, run.tracker, run.run_dir, self.cfg.log, self.name,
                                          OmegaConf.to_container(self.cfg, resolve=True))
            self.ema_model = self.ema.averaged_model(self.model)  # before compiling: the copy stays eager
        try:
            return self._train()
        finally:
            # Also when training stops on an error: an MLflow or W&B run left open would block the next one.
            if self.writer is not None:
                self.writer.close()

    def _train(self) -> dict[str, Any]:
        tcfg, run = self.cfg.train, self.run
        if run.compile.value:
            acceleration.compile_blocks(self.model)
        self._restore_rng()
        self.begin()
        progress = tqdm(total=tcfg.max_steps, initial=self.step, disable=not run.is_main, desc=self.progress_label,
                        dynamic_ncols=True)
        if self.step >= tcfg.max_steps:
            self.accelerator.print(f"{run.run_dir} already finished step {self.step} (train.max_steps="
                                   f"{tcfg.max_steps}); raise train.max_steps (with resume_force=true) to train on")
        last_checkpoint, clock = None, StepClock(self.step)
        while self.step < tcfg.max_steps:
            clock.start()
            self.before_step()
            micro_batches = (self.micro_batch(micro) for micro in range(tcfg.grad_accum))
            loss, terms = optimizer_step(self.accelerator, self.wrapped, self.optimizer, micro_batches,
                                         self.compute_loss, self.params, tcfg.grad_clip)
            self.step += 1
            self._apply(loss)
            clock.stop()  # the loss was read back (.item()), so queued device work is done
            self.losses.append(loss)
            progress.update(1)
            last = self.step == tcfg.max_steps
            if run.is_main:
                # The last step always logs, so a short run still ends with its numbers and grids.
                if self.step % self.cfg.log.every == 0 or last:
                    self._log(progress, loss, terms, clock.steps_per_s())
                self.monitor(last)
            if self.nan_streak >= tcfg.max_nan_steps:
                last_checkpoint = self.save_checkpoint()
                progress.close()
                raise TrainingDiverged(f"{self.nan_streak} consecutive steps with non-finite loss or gradients "
                                       f"(max_nan_steps={tcfg.max_nan_steps}) at step {self.step}: stopped. The "
                                       f"last finite weights are saved in {last_checkpoint}; lower train.lr, set "
                                       "train.grad_clip or check the data")
            if self.step % self.cfg.checkpoint.every == 0 or last:
                last_checkpoint = self.save_checkpoint()
                self._write_summary(clock)  # with every checkpoint, so a killed run keeps its speed
        progress.close()
        speed = self._write_summary(clock)
        # A rerun of a finished run writes nothing new: it reports the checkpoint already there.
        checkpoint = last_checkpoint or run.manager.latest()
        return {"run_dir": str(run.run_dir), "step": self.step, "losses": self.losses,
                "checkpoint": str(checkpoint) if checkpoint else None, "speed": speed}

    def _write_summary(self, clock: StepClock) -> dict[str, Any]:
        speed = clock.summary(self.step, self.run)
        if self.run.is_main and speed["steps"]:
            atomic_write(self.run.run_dir / SUMMARY_FILE,
                         lambda tmp: tmp.write_text(json.dumps(speed, indent=2) + "\n"))
        return speed

    def _apply(self, loss: float) -> None:
        """The non-finite policy: a skipped step moves neither the schedule nor the EMA."""
        if math.isfinite(loss):
            self.scheduler.step()
            self.after_update()
            self.ema.update(self.model, self.step)
            self.nan_streak = 0
            return
        self.nan_streak += 1
        if self.run.is_main:
            tqdm.write(f"step {self.step}: non-finite loss/gradient, step skipped "
                       f"({self.nan_streak}/{self.cfg.train.max_nan_steps} in a row)")

    def _log(self, progress: Any, loss: float, terms: Mapping[str, float], steps_per_s: float) -> None:
        lr = self.scheduler.get_last_lr()[0]
        shown = {name: f"{terms[name]:.3f}" for name in self.shown_terms if name in terms}
        progress.set_postfix(loss=f"{loss:.4f}", **shown, lr=f"{lr:.2e}")
        scalars = {**terms, "lr": lr, "steps_per_s": steps_per_s, "skipped": float(not math.isfinite(loss))}
        for name, value in scalars.items():
            self.writer.add_scalar(f"train/{name}", value, self.step)
