"""``python -m generator.eval_gfid``: gFID / IS / precision-recall of a generator + FlowMo tokenizer.

Reads configs/eval_gfid.yaml; the work is ``generator.gfid.run_gfid``. Multi-GPU with
``accelerate launch -m generator.eval_gfid ...`` (shard i on process i % world_size).
"""

from __future__ import annotations

import warnings
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from evaluation.feature_spaces import feature_space_option
from runkit import acceleration
from runkit.cli import SAMPLING_RULES, check_numbers, output_directory, user_path

from .gfid import default_cache_dir, make_sample_fn, run_gfid

OPTION_RULES = {**SAMPLING_RULES, "num_samples": "int >= 1", "num_classes": "int >= 1 or null", "seed": "int >= 0",
                "shard_size": "int >= 1", "batch_size": "int >= 1", "decoding.steps": "int >= 1 or null",
                "decoding.cfg": "float >= 0 or null", "max_reference_images": "int >= 1 or null",
                "feature_batch_size": "int >= 1", "memorization.max_train_images": "int >= 1"}


def resolve_reference_option(cfg: DictConfig) -> Any:
    """``reference=dataset`` -> the data config; otherwise an absolute path."""
    if str(cfg.reference) == "dataset":
        if cfg.get("data") is None:
            raise ValueError("reference=dataset needs a data config, e.g. data=imagenet_tar data.train_tar=... "
                             "(or give reference=/path/to/folder_or_stats.npz)")
        return OmegaConf.to_container(cfg.data, resolve=True)
    return str(user_path(cfg.reference))


def memorization_option(cfg: DictConfig, tokenizer: Any) -> Any:
    """``memorization.enabled``: None (off), or ``image_size -> RealSets`` from the data config's splits."""
    from .memorization import load_real_sets

    enabled, mcfg = cfg.memorization.enabled, cfg.memorization
    if enabled not in ("auto", True, False):
        raise ValueError(f"memorization.enabled={enabled!r}; choose auto, true or false")
    has_data = cfg.get("data") is not None
    if enabled is True and not has_data:
        raise ValueError("memorization.enabled=true needs a data config (data=...) whose train split the samples "
                         "are compared with")
    if enabled is False or not has_data or (enabled == "auto" and str(cfg.reference) != "dataset"):
        return None
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    cache = str(user_path(mcfg.token_cache)) if mcfg.token_cache else None
    return lambda image_size: load_real_sets(data_cfg, image_size, tokenizer=tokenizer, token_cache=cache,
                                             max_train_images=mcfg.max_train_images)


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval_gfid")
def main(cfg: DictConfig) -> None:
    from accelerate import Accelerator

    from generator import load_generator
    from tokenizer import load_flowmo

    check_numbers(cfg, OPTION_RULES)
    features = feature_space_option(cfg)  # missing weights fail before any model is loaded
    accelerator = Accelerator()  # autocast comes from the precision chosen for these models below
    generator_model = load_generator(user_path(cfg.checkpoint)).to(accelerator.device).eval()
    tokenizer = load_flowmo(user_path(cfg.tokenizer.checkpoint), config=cfg.tokenizer.preset)
    tokenizer = tokenizer.to(accelerator.device).eval()
    mismatch = generator_model.other_tokenizer_warning(tokenizer)
    if mismatch and accelerator.is_main_process:
        warnings.warn(mismatch, stacklevel=1)
    sampling = OmegaConf.to_container(cfg.sampling, resolve=True)
    decoding = OmegaConf.to_container(cfg.decoding, resolve=True)
    # The settings actually used (unset ones from the tokenizer's saved defaults): what the plan records.
    decoding = tokenizer.decode_settings(**decoding)
    sample_fn = make_sample_fn(generator_model, tokenizer, sampling, decoding)
    models = [generator_model, tokenizer]
    compile_choice, precision = acceleration.inference_choices(
        models, cfg.compile, cfg.mixed_precision, accelerator.device,
        -(-cfg.num_samples // (cfg.batch_size * accelerator.num_processes)))
    accelerator.print(acceleration.describe(compile_choice, precision))
    if compile_choice.value:
        for note in acceleration.compile_for_inference(models):
            accelerator.print(note)

    def autocast_sample_fn(class_ids, seeds):
        with acceleration.autocast(accelerator.device, precision.value):
            return sample_fn(class_ids, seeds)

    num_classes = cfg.num_classes if cfg.num_classes is not None else generator_model.num_classes
    if not 1 <= num_classes <= generator_model.num_classes:
        raise ValueError(f"num_classes={num_classes}: the generator knows classes 0..{generator_model.num_classes - 1}"
                         " (num_classes=k evaluates the first k of them)")
    class_names = list(generator_model.class_names)[:num_classes]
    out_dir = output_directory(cfg.out_dir, "out_dir")
    settings = {
        "checkpoint": str(user_path(cfg.checkpoint)),
        "tokenizer": {"checkpoint": str(user_path(cfg.tokenizer.checkpoint)), "preset": cfg.tokenizer.preset,
                      "architecture_hash": tokenizer.config.architecture_hash()},
        "sampling": sampling,
        "decoding": decoding,
        "mixed_precision": precision.value, "compile": bool(compile_choice.value),
    }
    report = run_gfid(
        autocast_sample_fn, num_samples=cfg.num_samples, num_classes=num_classes, out_dir=out_dir,
        reference=resolve_reference_option(cfg),
        features=features, memorization=memorization_option(cfg, tokenizer), shard_size=cfg.shard_size,
        batch_size=cfg.batch_size,
        seed=cfg.seed, metrics=list(cfg.metrics), class_names=class_names, settings=settings,
        reference_split=cfg.reference_split, max_reference_images=cfg.max_reference_images,
        cache_dir=str(user_path(cfg.cache_dir)) if cfg.cache_dir else default_cache_dir(),
        save_png=cfg.save_png, write_npz=cfg.write_npz, overwrite=cfg.overwrite,
        feature_batch_size=cfg.feature_batch_size, accelerator=accelerator,
        verbose=accelerator.is_main_process)
    if accelerator.is_main_process:
        print(f"report: {report.files['report']}  grid: {report.files['grid']}")
        print(report.summary())


if __name__ == "__main__":
    main()
