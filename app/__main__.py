"""`python -m app`: the web demo (settings in configs/app.yaml, `key=value` overrides, `--help`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf


def _path(value: str | None) -> str | None:
    from runkit.cli import user_path

    return str(user_path(value)) if value not in (None, "") else None


def _optional_path(value: str | bool | None) -> str | bool | None:
    """A path, or false (off) / null (the default) passed through as they are."""
    return value if value in (None, False) else _path(value)


@hydra.main(version_base="1.3", config_path="../configs", config_name="app")
def main(cfg: DictConfig) -> None:
    # Heavy imports after argument parsing so `--help` and typos answer at once.
    from .domains import domains_from_mapping
    from .limits import DemoLimits
    from .models import DEFAULT_WEIGHTS_DIR
    from .pipeline import DemoPipeline
    from .settings import DemoSettings
    from .ui import SamplingDefaults, build_demo, launch

    limits = DemoLimits.from_mapping(OmegaConf.to_container(cfg.limits))
    model_dirs = tuple(_path(d) for d in cfg.model_dirs)
    if cfg.model_picker and not model_dirs:
        raise ValueError("model_picker=true needs model_dirs=[<dir>, ...]: the directories clients may load from")
    settings = DemoSettings(
        device=cfg.device, dtype=cfg.dtype, compile=cfg.compile, limits=limits, lpips_net=cfg.lpips.net,
        lpips_weights=_path(cfg.lpips.weights), allow_random_lpips=cfg.lpips.allow_random,
        inception_weights=_path(cfg.evaluate.inception_weights),
        allow_random_inception=cfg.evaluate.allow_random_weights,
        features=cfg.evaluate.features, feature_classifier=_path(cfg.evaluate.feature_classifier),
        eval_reference=_path(cfg.evaluate.reference), eval_reference_split=cfg.evaluate.reference_split,
        eval_max_reference_images=cfg.evaluate.max_reference_images, work_dir=_path(cfg.work_dir),
        model_dirs=model_dirs, domain=str(cfg.domain),
        domains=domains_from_mapping(OmegaConf.to_container(cfg.domains, resolve=True)))
    pipeline = DemoPipeline.load(
        _path(cfg.tokenizer.checkpoint), cfg.tokenizer.preset, _path(cfg.generator.maskgit), _path(cfg.generator.ar),
        photo_tokenizer=_optional_path(cfg.tokenizer.photo_checkpoint),
        weights_dir=_path(cfg.weights_dir) or DEFAULT_WEIGHTS_DIR, settings=settings,
        generation_tokenizer=_path(cfg.tokenizer.generation_checkpoint))
    print(pipeline.status(), flush=True)
    compile_choice = pipeline.compile_choice()
    print(f"compile: {'on, in the background' if compile_choice.value else 'off'} ({compile_choice.reason})",
          flush=True)
    if compile_choice.value:
        pipeline.compile_in_background()
    demo = build_demo(pipeline, SamplingDefaults.from_mapping(OmegaConf.to_container(cfg.sampling)),
                      model_picker=cfg.model_picker)
    launch(demo, host=cfg.host, port=cfg.port, concurrency=cfg.concurrency, queue_size=cfg.queue_size,
           max_upload_mb=limits.max_upload_mb, share=cfg.share, open_browser=cfg.open_browser)


if __name__ == "__main__":
    main()
