from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from generator import load_generator
from generator.tokens import TokenCacheManifest, write_manifest, write_shard
from generator.train import lr_factor, train
from tokenizer import FlowMo, FlowMoConfig

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
TOKENIZER = FlowMoConfig(image_size=16, patch_size=4, code_length=4, context_dim=6, lfq_bits=2, enc_width=1 / 3,
                         dec_width=1 / 3, enc_depth=1, dec_depth=1, num_heads=2)


def synthetic_cache(directory: Path, items: int = 96) -> Path:
    """12 indices of vocab 4 per image: class c is the constant sequence c, with 10 % noise."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.arange(3)[:, None].repeat(1, 12)
    labels = torch.arange(items) % 3
    indices = patterns[labels]
    noise = torch.rand(indices.shape, generator=g) < 0.1
    indices = torch.where(noise, torch.randint(0, 4, indices.shape, generator=g), indices)
    manifest = TokenCacheManifest(tokenizer_hash=TOKENIZER.architecture_hash(), num_indices=12, vocab_size=4,
                                  num_classes=3, class_names=["red", "green", "blue"], num_items=items,
                                  shard_size=items, complete=True)
    write_shard(directory, 0, indices[:, None], labels, 4)
    write_manifest(directory, manifest)
    return directory


def config(run_dir: Path, cache: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("generator_train", overrides=[
            "generator=tiny", f"tokens.cache={cache}", f"run_dir={run_dir}", "train.batch_size=16",
            "train.warmup_steps=2", "train.lr=1e-2", "train.min_lr_ratio=1.0", "train.ema_decay=0.9", "log.every=1", "log.samples_every=0",
            "checkpoint.keep_every=null", *overrides])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["maskgit", "ar"])
def test_short_training_lowers_the_loss(tmp_path, model):
    cache = synthetic_cache(tmp_path / "cache")
    summary = train(config(tmp_path / "run", cache, f"generator.model={model}", "train.max_steps=30",
                           "checkpoint.every=30"))
    losses = summary["losses"]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    generator = load_generator(tmp_path / "run")
    assert generator.model_type == model and generator.class_names == ["red", "green", "blue"]
    assert generator.config.tokenizer_hash == TOKENIZER.architecture_hash()


@pytest.mark.slow
def test_exact_resume(tmp_path):
    cache = synthetic_cache(tmp_path / "cache")
    straight = train(config(tmp_path / "a", cache, "train.max_steps=6", "checkpoint.every=3",
                            "checkpoint.keep_last=5", "generator.dropout=0.1"))
    # A run killed after step 3: its checkpoint copied into a fresh run directory, then resumed.
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    import shutil

    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_00000003", tmp_path / "b" / "checkpoints" / "step_00000003")
    resumed = train(config(tmp_path / "b", cache, "train.max_steps=6", "checkpoint.every=3",
                           "checkpoint.keep_last=5", "generator.dropout=0.1"))
    assert resumed["losses"] == straight["losses"]
    a = torch.load(tmp_path / "a" / "checkpoints" / "step_00000006" / "training_state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "step_00000006" / "training_state.pt", weights_only=True)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def test_sample_grid_written_with_tokenizer(tmp_path):
    torch.manual_seed(0)
    FlowMo(TOKENIZER).save_pretrained(tmp_path / "tok")
    cache = synthetic_cache(tmp_path / "cache")
    train(config(tmp_path / "run", cache, "train.max_steps=2", "checkpoint.every=2", "log.samples_every=2",
                 f"tokenizer.checkpoint={tmp_path / 'tok'}", "log.samples_per_class=2", "log.decode_steps=2"))
    assert (tmp_path / "run" / "samples" / "step_00000002.png").is_file()


def test_lr_schedule():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 10, 100, 0.0) == pytest.approx(0.5)


@pytest.mark.parametrize("model,width", [("maskgit", 768), ("ar", 768)])
def test_model_shorthand_selects_the_base_size_of_that_kind(model, width):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("generator_train", overrides=[f"model={model}"])
    assert cfg.generator.model == model and cfg.generator.width == width
    assert "model" not in cfg


@pytest.mark.slow
def test_compiled_training_writes_clean_weights_without_recompiling(tmp_path):
    from safetensors.torch import load_file

    cache = synthetic_cache(tmp_path / "cache")
    summary = train(config(tmp_path / "run", cache, "generator.model=ar", "train.max_steps=8", "checkpoint.every=8",
                           "train.compile=true"))
    speed = summary["speed"]
    assert speed["compile"] is True and speed["recompiles_after_warmup"] == 0
    assert (tmp_path / "run" / "summary.json").is_file()
    weights = load_file(str(next((tmp_path / "run" / "checkpoints").glob("step_*/model.safetensors"))))
    assert not [name for name in weights if "_orig_mod" in name]
    assert load_generator(tmp_path / "run").model_type == "ar"  # the export loads as an eager model
