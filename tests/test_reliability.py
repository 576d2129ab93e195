"""Issue 13: the holes found by attacking and interrupting the project, one test (or a few) per item.

Model picker confinement and memory (3), stale partial checkpoints (4), changed settings on
resume (5), unreadable evaluation images (6), gfid overwrite (7), disk full (8), numeric options
and cross-trainer resume (9), the tokenizer a generator was trained with (10), transparent
uploads (11).
"""

from __future__ import annotations

import errno
import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

import app.models as models_module
import tokenizer.train as tokenizer_train
from app.models import load_models
from app.pipeline import DemoPipeline
from app.settings import DemoSettings
from generator import GeneratorConfig, MaskGIT
from generator.tokens import encoder_fingerprint
from tokenizer import FlowMo
from runkit.checkpoint import CheckpointManager, DiskFullError

from app_helpers import make_demo_weights, tiny_tokenizer_config
from test_generator_train import config as generator_cfg
from test_generator_train import synthetic_cache
from test_train import make_cfg as tokenizer_cfg

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_images(folder: Path, count: int, bad: str | None = None) -> Path:
    """``count`` random 16-px PNGs in one class folder, plus one corrupt file named ``bad``."""
    rng = np.random.default_rng(0)
    (folder / "things").mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / "things" / f"{i}.png")
    if bad:
        (folder / "things" / bad).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


# ---------------------------------------------------------------------------- 3. the demo's model picker
def test_model_picker_is_off_by_default():
    import inspect

    from app.ui import build_demo

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("app")
    assert cfg.model_picker is False and list(cfg.model_dirs) == []
    assert inspect.signature(build_demo).parameters["model_picker"].default is False


def test_model_picker_needs_model_dirs():
    result = subprocess.run([sys.executable, "-m", "app", "model_picker=true"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "model_picker=true needs model_dirs=" in result.stderr


def test_model_picker_loads_only_under_model_dirs_and_says_nothing_about_other_paths(tmp_path):
    allowed = make_demo_weights(tmp_path / "allowed")
    outside = make_demo_weights(tmp_path / "outside")  # loadable models, but not where the picker may look
    (allowed / "escape").symlink_to(outside / "tokenizer")
    demo = DemoPipeline.load(weights_dir=allowed, settings=DemoSettings(model_dirs=(str(allowed),)))
    before = demo.models
    messages = []
    for path in (outside / "tokenizer", tmp_path / "does_not_exist", "../outside/tokenizer", "escape"):
        with pytest.raises(ValueError) as caught:
            demo.reload(str(path))
        messages.append(str(caught.value))
    assert len(set(messages)) == 1 and "only loads checkpoints under" in messages[0]
    assert demo.models is before
    demo.reload("tokenizer", None, "maskgit")  # relative to the first model dir
    assert demo.generator_names == ["MaskGIT"]
    with pytest.raises(ValueError, match="no directory"):  # no model_dirs: nothing may be loaded by path
        DemoPipeline(before).reload(str(allowed / "tokenizer"))


def test_failed_picker_load_frees_what_it_built(tmp_path, monkeypatch):
    allowed = make_demo_weights(tmp_path / "allowed")
    make_demo_weights(tmp_path / "allowed" / "stale", tokenizer_hash="0123456789abcdef")  # fits no tokenizer
    demo = DemoPipeline.load(weights_dir=allowed, settings=DemoSettings(model_dirs=(str(allowed),)))
    built = []
    real = models_module._load_tokenizer

    def tracked(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append(weakref.ref(model))
        return model

    monkeypatch.setattr(models_module, "_load_tokenizer", tracked)
    before = demo.models
    with pytest.raises(ValueError, match="does not fit the loaded tokenizer") as caught:
        demo.reload("tokenizer", None, "stale/maskgit")
    gc.collect()
    assert len(built) == 1 and built[0]() is None, "the failed load's tokenizer is still referenced"
    assert caught.value is not None and demo.models is before


# ---------------------------------------------------------------------------- 4. partial checkpoints
def test_stale_partial_checkpoints_are_cleaned_when_a_run_starts(tmp_path):
    root = tmp_path / "checkpoints"
    dead, alive = _dead_pid(), os.getppid()
    for name in (f".step_00000003.tmp-{dead}", f".step_00000004.tmp-{alive}"):
        (root / name).mkdir(parents=True)
        (root / name / "training_state.pt").write_bytes(b"partial")
    tokenizer_train.train(tokenizer_cfg(tmp_path, "train.max_steps=1", "checkpoint.every=1"))
    names = sorted(p.name for p in root.iterdir())
    # A killed save's leftovers go; a live process may still be saving.
    assert names == [f".step_00000004.tmp-{alive}", "step_00000001"]


def test_a_checkpoint_moved_aside_by_a_killed_resave_is_put_back(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(2, {"step": 2})
    aside = manager.root / f".step_00000002.old.tmp-{_dead_pid()}"
    os.rename(manager.root / "step_00000002", aside)  # killed between the two renames of a re-save
    assert manager.remove_stale_temp_dirs() == []
    assert manager.latest() == manager.root / "step_00000002" and not aside.exists()


# ---------------------------------------------------------------------------- 5. resume with other settings
def test_resume_refuses_changed_settings_unless_forced(tmp_path):
    tokenizer_train.train(tokenizer_cfg(tmp_path, "train.max_steps=2", "checkpoint.every=2"))
    original = (tmp_path / "config.yaml").read_text()
    changed = ("train.max_steps=3", "checkpoint.every=3", "train.lr=0.0125", "log.every=2")
    with pytest.raises(ValueError) as caught:
        tokenizer_train.train(tokenizer_cfg(tmp_path, *changed))
    message = str(caught.value)
    assert "train.lr: 0.001 -> 0.0125" in message and "train.max_steps: 2 -> 3" in message
    assert "resume_force=true" in message
    assert "log.every" not in message and "checkpoint.every" not in message  # how a run logs may change
    assert (tmp_path / "config.yaml").read_text() == original
    summary = tokenizer_train.train(tokenizer_cfg(tmp_path, *changed, "resume_force=true"))
    assert summary["step"] == 3
    assert (tmp_path / "config.until_step_00000002.yaml").read_text() == original
    assert "lr: 0.0125" in (tmp_path / "config.yaml").read_text()


def test_generator_resume_refuses_changed_settings(tmp_path):
    cache = synthetic_cache(tmp_path / "cache")
    from generator.train import train

    train(generator_cfg(tmp_path / "run", cache, "train.max_steps=2", "checkpoint.every=2"))
    with pytest.raises(ValueError, match=r"train.batch_size: 16 -> 8"):
        train(generator_cfg(tmp_path / "run", cache, "train.max_steps=2", "checkpoint.every=2",
                            "train.batch_size=8"))


# ---------------------------------------------------------------------------- 6. unreadable images
def test_eval_skips_and_reports_unreadable_images(tmp_path):
    from tokenizer.eval import evaluate_model

    val = _write_images(tmp_path / "val", 3, bad="2b_broken.png")  # sorted between 2.png and 3.png
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("tokenizer_eval", overrides=["data=imagefolder", "data.root=unused", f"data.val_root={val}",
                                                   "metrics=[psnr]", "steps=1", "batch_size=2", "cpu=true",
                                                   "checkpoint=tiny"])
    torch.manual_seed(0)
    model = FlowMo(tiny_tokenizer_config(image_size=16))
    with pytest.warns(RuntimeWarning, match="2b_broken.png"):
        report = evaluate_model(model, cfg, tmp_path / "out")
    assert report["num_images"] == 3 and report["skipped"] == 1
    assert report["skipped_files"] == [str(val / "things" / "2b_broken.png")]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["skipped"] == 1


def test_training_prints_the_skipped_total(tmp_path, capsys):
    images = _write_images(tmp_path / "train", 8, bad="0_broken.png")
    summary = tokenizer_train.train(tokenizer_cfg(
        tmp_path / "run", "data=imagefolder", f"data.root={images}", "data.num_workers=1", "train.max_steps=2",
        "checkpoint.every=2"))
    # Counted although a DataLoader worker process met the file (and warned, in that process).
    assert summary["skipped"] == 1
    assert "skipped 1 unreadable training file(s)" in capsys.readouterr().out


# ---------------------------------------------------------------------------- 7. gfid overwrite
def test_gfid_overwrite_leaves_a_clean_output_directory(tmp_path):
    from generator.gfid import SamplePlan, ShardStore

    store = ShardStore(tmp_path, SamplePlan(num_samples=4, num_classes=2, shard_size=4, batch_size=4))
    store.check_plan({"cfg": 1.0})
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    store.write(0, images, np.array([0, 1, 0, 1]), np.arange(4), np.arange(4))
    for name in ("grid.png", "report.json", "samples_4x8x8x3.npz", "notes.txt"):
        (tmp_path / name).write_text("old")
    store.check_plan({"cfg": 2.0}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "plan.json"]
    assert json.loads((tmp_path / "plan.json").read_text())["settings"] == {"cfg": 2.0}


# ---------------------------------------------------------------------------- 8. disk full
@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 12507328 vs 12507216"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_disk_full_during_a_checkpoint_says_so(tmp_path, monkeypatch, failure):
    manager = CheckpointManager(tmp_path)
    previous = manager.save(1, {"step": 1})

    def full_disk(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFullError) as caught:
        manager.save(2, {"step": 2})
    message = str(caught.value)
    assert "disk full" in message and str(manager.root) in message
    assert f"previous checkpoint {previous} is intact" in message
    assert [p.name for p in manager.root.iterdir()] == ["step_00000001"]  # no partial copy left
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="^a bug$"):  # other failures pass through unchanged
        manager.save(3, {"step": 3})


# ---------------------------------------------------------------------------- 9. numeric options, wrong trainer
@pytest.mark.parametrize("override, key", [
    ("train.grad_accum=0", "train.grad_accum=0"), ("checkpoint.every=0", "checkpoint.every=0"),
    ("log.every=0", "log.every=0"), ("train.max_steps=0", "train.max_steps=0"),
    ("train.max_steps=-5", "train.max_steps=-5"), ("train.max_steps=abc", "train.max_steps='abc'"),
    ("train.lr=0", "train.lr=0"), ("train.batch_size=0", "train.batch_size=0"),
])
def test_tokenizer_training_checks_numbers_before_building(tmp_path, monkeypatch, override, key):
    monkeypatch.setattr(tokenizer_train, "FlowMo", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(ValueError, match="invalid option") as caught:
        tokenizer_train.train(tokenizer_cfg(tmp_path, override))
    assert key in str(caught.value) and len(str(caught.value).splitlines()) == 2  # one line per bad option
    assert not (tmp_path / "config.yaml").exists()


def test_generator_training_checks_numbers(tmp_path):
    from generator.train import train

    with pytest.raises(ValueError) as caught:
        train(generator_cfg(tmp_path / "run", tmp_path / "no_cache", "log.samples_per_class=0",
                            "train.batch_size=0", "train.lr=nan"))
    for line in ("log.samples_per_class=0: must be an integer >= 1", "train.batch_size=0: must be an integer >= 1",
                 "train.lr=nan: must be a number > 0"):
        assert line in str(caught.value)


def test_sample_refuses_nan_guidance():
    result = subprocess.run([sys.executable, "-m", "generator.sample", "checkpoint=unused",
                             "tokenizer.checkpoint=unused", "class_ids=[1]", "sampling.cfg_scale=nan",
                             "samples_per_class=0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "sampling.cfg_scale=nan: must be a number >= 0 or null" in result.stderr
    assert "samples_per_class=0: must be an integer >= 1" in result.stderr


def test_a_run_never_resumes_the_other_trainers_checkpoint(tmp_path, monkeypatch):
    from generator.train import train as train_generator

    cache = synthetic_cache(tmp_path / "cache")
    train_generator(generator_cfg(tmp_path / "gen", cache, "train.max_steps=1", "checkpoint.every=1"))
    tokenizer_train.train(tokenizer_cfg(tmp_path / "tok", "train.max_steps=1", "checkpoint.every=1"))
    monkeypatch.setattr(tokenizer_train, "FlowMo", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(ValueError, match="is a generator training checkpoint, this is tokenizer training"):
        tokenizer_train.train(tokenizer_cfg(tmp_path / "new_tok", f"resume={tmp_path / 'gen'}"))
    with pytest.raises(ValueError, match="is a tokenizer training checkpoint, this is generator training"):
        train_generator(generator_cfg(tmp_path / "new_gen", cache, f"resume={tmp_path / 'tok'}"))


# ---------------------------------------------------------------------------- 10. the generator's tokenizer
def _generator(fingerprint: str | None, tokenizer_config) -> MaskGIT:
    return MaskGIT(GeneratorConfig(model="maskgit", seq_len=tokenizer_config.num_indices,
                                   vocab_size=tokenizer_config.vocab_size, num_classes=2, width=32, depth=1,
                                   num_heads=2, tokenizer_hash=tokenizer_config.architecture_hash(),
                                   tokenizer_fingerprint=fingerprint))


def test_generator_records_its_tokenizer_and_warns_on_another():
    from generator.tokens import TokenCache, TokenCacheManifest
    from generator.train import generator_config

    config = tiny_tokenizer_config()
    torch.manual_seed(0)
    trained_on, other = FlowMo(config), FlowMo(config)  # same architecture, other weights
    manifest = TokenCacheManifest(tokenizer_hash=config.architecture_hash(), num_indices=config.num_indices,
                                  vocab_size=config.vocab_size, num_classes=2, class_names=["a", "b"], num_items=1,
                                  shard_size=1, encoder_fingerprint=encoder_fingerprint(trained_on), complete=True)
    cache = TokenCache(manifest, torch.zeros(1, 1, config.num_indices, dtype=torch.int16), torch.zeros(1).long())
    recorded = generator_config({"model": "maskgit", "width": 32, "depth": 1, "num_heads": 2}, cache)
    assert recorded.tokenizer_fingerprint == encoder_fingerprint(trained_on)

    generator = _generator(recorded.tokenizer_fingerprint, config)
    assert generator.other_tokenizer_warning(trained_on) is None
    assert "trained on the tokens of another tokenizer" in generator.other_tokenizer_warning(other)
    assert _generator(None, config).other_tokenizer_warning(other) is None  # older generators: nothing recorded


def test_demo_status_warns_about_a_generator_of_another_tokenizer(tmp_path):
    weights = make_demo_weights(tmp_path / "weights")
    meta_path = weights / "maskgit" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["tokenizer_fingerprint"] = "0123456789ab"
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="MaskGIT: .*another tokenizer"):
        models = load_models(weights_dir=weights, photo_tokenizer=False)
    status = DemoPipeline(models).status()
    assert "⚠ MaskGIT: " in status and "AR: " not in status.split("⚠", 1)[1]


def test_sample_cli_warns_about_another_tokenizer(tmp_path):
    config = tiny_tokenizer_config(image_size=16)
    torch.manual_seed(0)
    FlowMo(config).save_pretrained(tmp_path / "tok")
    _generator("0123456789ab", config).save_pretrained(tmp_path / "gen")
    result = subprocess.run([sys.executable, "-m", "generator.sample", f"checkpoint={tmp_path / 'gen'}",
                             f"tokenizer.checkpoint={tmp_path / 'tok'}", "class_ids=[1]", "samples_per_class=1",
                             "decode_steps=1", "sampling.num_steps=1", f"out={tmp_path / 'grid.png'}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "trained on the tokens of another tokenizer" in result.stderr


# ---------------------------------------------------------------------------- 11. transparent uploads
def test_reconstruct_says_when_transparency_was_flattened(tmp_path):
    demo = DemoPipeline.load(weights_dir=make_demo_weights(tmp_path / "weights"))
    pixels = np.full((32, 32, 4), 255, dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "opaque.png")
    pixels[:16, :, 3] = 0
    Image.fromarray(pixels).save(tmp_path / "transparent.png")
    notes = {name: [row for row in demo.reconstruct(tmp_path / f"{name}.png", decode_steps=1).metrics_rows()
                    if row[0] == "note"] for name in ("opaque", "transparent")}
    assert notes["opaque"] == []
    assert notes["transparent"] == [["note", "image has transparent areas: they were flattened on white"]]
