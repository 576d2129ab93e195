"""Evaluate a FlowMo tokenizer's reconstructions: rFID, PSNR, SSIM, LPIPS (alex, vgg), BPP.

    python -m tokenizer.eval checkpoint=<run dir | step dir | save_pretrained dir> data=imagenet_tar \
        data.val_tar=... data.val_index=... inception_weights=... lpips_alex_weights=... lpips_vgg_weights=...
    python -m tokenizer.eval checkpoint=flowmo_lo.pth preset=flowmo_lo ...        # a released checkpoint
    python -m tokenizer.eval checkpoint=<run dir> continuous=true ...             # every new checkpoint
    accelerate launch -m tokenizer.eval ...                                       # shards over GPUs

Writes into the output directory: originals/ and reconstructions/ (PNG, what rFID is computed
on), report.json, comparison.png, and with ``continuous=true`` one JSON line per checkpoint in
evaluations.jsonl. Every line computed with random backbone weights says UNCALIBRATED.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from evaluation.feature_spaces import feature_space_option
from runkit.checkpoint import CheckpointManager, parse_step
from runkit import acceleration
from runkit.cli import check_numbers, output_directory, user_path
from runkit.fileio import atomic_write

from .loading import load_flowmo
from .model import FlowMo

METRICS = ("rfid", "psnr", "ssim", "lpips_alex", "lpips_vgg")
OPTION_RULES = {"subsample": "int >= 1 or null", "batch_size": "int >= 1", "steps": "int >= 1 or null",
                "cfg": "float >= 0 or null", "seed": "int >= 0", "grid_images": "int >= 1",
                "max_checkpoints": "int >= 1 or null", "poll_interval_s": "float >= 0", "timeout_s": "float >= 0"}


def image_noise(index: int, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The sampler's initial noise for dataset image ``index``: fixed per image, so results do not
    depend on batch size or the number of processes. (3, H, W)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + index))


def _check_metrics(names: Any) -> list[str]:
    names = list(names)
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    return names


def _save_pngs(images: torch.Tensor, indices: list[int], folder: Path) -> None:
    from PIL import Image

    from runkit.images import tensor_to_uint8

    folder.mkdir(parents=True, exist_ok=True)
    for pixels, index in zip(tensor_to_uint8(images).numpy(), indices):
        Image.fromarray(pixels).save(folder / f"{index:06d}.png")


def make_accelerator(cfg: DictConfig) -> Any:
    """Devices and processes for evaluation (precision and compilation are chosen per model, in
    :func:`evaluate_model`)."""
    from accelerate import Accelerator

    return Accelerator(cpu=cfg.get("cpu", False))


def evaluate_model(model: FlowMo, cfg: DictConfig, out_dir: Path, accelerator: Any = None) -> dict[str, Any]:
    """Reconstruct the val split (or ``subsample`` of it) and compute the configured metrics.

    Returns the report dict (also written to ``out_dir/report.json`` by the main process).
    """
    from accelerate.utils import gather_object

    from imagedata import build_dataset
    from imagedata.subsets import evenly_spaced
    from runkit.images import save_comparison_grid
    from evaluation.metrics import KEY_FID, LPIPSMetric, compute_fidelity_metrics, format_metric, psnr, ssim

    metrics = _check_metrics(cfg.metrics)
    accelerator = accelerator or make_accelerator(cfg)
    device = accelerator.device
    model = model.to(device).eval()
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    if cfg.subsample is not None:
        data_cfg["subsample"] = cfg.subsample
    dataset = build_dataset(data_cfg, "val", model.config.image_size, train=False)
    allow = bool(cfg.allow_random_weights)
    # Built before any reconstruction: missing weights fail now, not after the whole split.
    features = feature_space_option(cfg) if "rfid" in metrics else None
    lpips_nets = {name: LPIPSMetric(net=name.split("_")[1], backbone_weights=cfg.get(f"{name}_weights"),
                                    allow_random=allow, device=device, option=f"{name}_weights")
                  for name in ("lpips_alex", "lpips_vgg") if name in metrics}

    shard = list(range(accelerator.process_index, len(dataset), accelerator.num_processes))
    grid_ids = {shard[i] for i in evenly_spaced(len(shard), cfg.grid_images)}  # across all classes
    originals_dir, recons_dir = out_dir / "originals", out_dir / "reconstructions"
    rows: list[dict[str, Any]] = []
    shown: list[tuple[torch.Tensor, torch.Tensor]] = []
    size = model.config.image_size
    batches = [shard[i:i + cfg.batch_size] for i in range(0, len(shard), cfg.batch_size)]
    compile_choice, precision = acceleration.inference_choices([model], cfg.get("compile", "auto"),
                                                               cfg.get("mixed_precision", "auto"), device, len(batches))
    accelerator.print(acceleration.describe(compile_choice, precision))
    if compile_choice.value:
        acceleration.compile_for_inference([model])
    for batch in tqdm(batches, desc="reconstructing", disable=not accelerator.is_main_process, dynamic_ncols=True):
        # An unreadable file is skipped and reported, never replaced by a neighbour (scored twice).
        items = {i: dataset.exact_item(i) for i in batch}
        batch = [i for i in batch if items[i] is not None]
        if not batch:
            continue
        images = torch.stack([items[i][0] for i in batch])
        noise = torch.stack([image_noise(i, cfg.seed, (3, size, size)) for i in batch])
        with torch.no_grad(), acceleration.autocast(device, precision.value):
            recons = model.reconstruct(images.to(device), steps=cfg.steps, cfg=cfg.cfg, schedule=cfg.schedule,
                                       noise=noise.to(device)).float().cpu()
        per_image: dict[str, torch.Tensor] = {}
        if "psnr" in metrics:
            per_image["psnr"] = psnr(images, recons)
        if "ssim" in metrics:
            per_image["ssim"] = ssim(images, recons)
        for name, metric in lpips_nets.items():
            per_image[name] = metric(images, recons)
        rows += [{"index": idx, **{k: float(v[j]) for k, v in per_image.items()}} for j, idx in enumerate(batch)]
        if "rfid" in metrics:
            _save_pngs(images, batch, originals_dir)
            _save_pngs(recons, batch, recons_dir)
        keep = [j for j, idx in enumerate(batch) if idx in grid_ids]
        if keep:
            shown.append((images[keep], recons[keep]))
    rows = gather_object(rows)
    skipped_files = sorted(gather_object(list(dataset.skipped_files)))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return {}

    calibrated = {"lpips_alex": lpips_nets["lpips_alex"].calibrated if "lpips_alex" in lpips_nets else True,
                  "lpips_vgg": lpips_nets["lpips_vgg"].calibrated if "lpips_vgg" in lpips_nets else True,
                  "psnr": True, "ssim": True, "bpp": True}
    if not rows:
        raise ValueError(f"no readable image in the val split: all {len(skipped_files)} files were unreadable")
    results: dict[str, float] = {name: sum(r[name] for r in rows) / len(rows) for name in metrics if name != "rfid"}
    if "rfid" in metrics:
        fidelity = compute_fidelity_metrics(str(originals_dir), str(recons_dir), features=features,
                                            batch_size=cfg.batch_size, device=device, verbose=False)
        results["rfid"] = float(fidelity[KEY_FID])
        calibrated["rfid"] = bool(fidelity["calibrated"])
    results["bpp"] = model.config.bits_per_pixel
    labels = {"rfid": features.metric_name("rFID")} if features is not None else {}
    lines = [format_metric(labels.get(name, name), value, calibrated[name]) for name, value in results.items()]
    report = {
        "checkpoint": str(cfg.checkpoint), "num_images": len(rows), "image_size": size,
        "skipped": len(skipped_files), "skipped_files": skipped_files,
        "decoder": {**model.decode_settings(cfg.steps, cfg.cfg, cfg.schedule), "seed": cfg.seed,
                    "evaluations": model.decode_evaluations(cfg.steps, cfg.cfg, cfg.schedule)},
        "compile": bool(compile_choice.value), "mixed_precision": precision.value,
        "metrics": results, "calibrated": {k: calibrated[k] for k in results},
        "feature_space": features.label if features is not None else None,
        "uncalibrated": sorted(k for k in results if not calibrated[k]), "lines": lines,
    }
    save_comparison_grid(torch.cat([o for o, _ in shown]), torch.cat([r for _, r in shown]), out_dir / "comparison.png")
    atomic_write(out_dir / "report.json", lambda p: p.write_text(json.dumps(report, indent=2)))
    for line in lines:
        print(line)
    if skipped_files:
        print(f"skipped {len(skipped_files)} unreadable file(s), listed in report.json: {skipped_files[:3]}"
              + (" ..." if len(skipped_files) > 3 else ""))
    return report


def _checkpoint_path(cfg: DictConfig) -> str:
    if cfg.checkpoint in (None, "???"):
        raise ValueError("checkpoint is not set: pass checkpoint=<run dir, step dir, save_pretrained dir or .pth>")
    return str(user_path(cfg.checkpoint))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.checkpoint`` once; returns the report."""
    out_dir = output_directory(cfg.get("out_dir"), "out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_flowmo(_checkpoint_path(cfg), config=cfg.get("preset"))
    return evaluate_model(model, cfg, out_dir)


def evaluate_continuously(cfg: DictConfig) -> list[dict[str, Any]]:
    """Poll a training run directory and evaluate every checkpoint not yet in evaluations.jsonl.

    Stops after ``max_checkpoints`` evaluations or when no new checkpoint appeared for
    ``timeout_s`` seconds. Checkpoints already pruned by the trainer are simply skipped.
    """
    run_dir = Path(_checkpoint_path(cfg))
    out_dir = output_directory(cfg.get("out_dir"), "out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "evaluations.jsonl"
    done = set()
    if log_path.is_file():
        done = {json.loads(line)["step"] for line in log_path.read_text().splitlines() if line.strip()}
    accelerator = make_accelerator(cfg)
    manager = CheckpointManager(run_dir)
    reports: list[dict[str, Any]] = []
    last_new = time.time()
    while cfg.max_checkpoints is None or len(reports) < cfg.max_checkpoints:
        pending = [d for d in manager.step_dirs() if parse_step(d) not in done]
        if not pending:
            if time.time() - last_new > cfg.timeout_s:
                break
            time.sleep(cfg.poll_interval_s)
            continue
        step_dir = pending[0]
        step = parse_step(step_dir)
        step_cfg = OmegaConf.merge(cfg, {"checkpoint": str(step_dir)})
        report = evaluate_model(load_flowmo(step_dir), step_cfg, out_dir / step_dir.name, accelerator)
        done.add(step)
        last_new = time.time()
        if accelerator.is_main_process:
            report = {"step": step, **report}
            with open(log_path, "a") as handle:
                handle.write(json.dumps(report) + "\n")
            reports.append(report)
        else:
            reports.append({"step": step})
    return reports


def run(cfg: DictConfig) -> Any:
    check_numbers(cfg, OPTION_RULES)
    return evaluate_continuously(cfg) if cfg.continuous else evaluate(cfg)


@hydra.main(version_base="1.3", config_path="../configs", config_name="tokenizer_eval")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
