"""What a newcomer meets first: multi-object prompts and the Generate grid in the demo, hints
from the loaded models' domain, quiet start-up, short training runs that end with results, and
commands that leave no Hydra folders behind."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest
import torch
from PIL import Image

from app.limits import DemoLimits
from app.pipeline import DemoPipeline
from app.settings import DemoSettings
from app.visualize import DISPLAY_MIN_SIZE

from app_helpers import free_port, make_demo_weights

gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]
PADDING = 2  # make_grid_image's default
CELL = DISPLAY_MIN_SIZE + PADDING  # a 32-px image shown at 128 px, plus padding


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> DemoPipeline:
    weights = make_demo_weights(tmp_path_factory.mktemp("newcomer_weights"))
    settings = DemoSettings(limits=DemoLimits(max_batch=10, max_decode_steps=20),
                            work_dir=str(tmp_path_factory.mktemp("newcomer_work")))
    return DemoPipeline.load(weights_dir=weights, settings=settings)


@pytest.fixture(scope="module")
def served(pipeline):
    from app.ui import SamplingDefaults, build_demo, launch

    demo = build_demo(pipeline, SamplingDefaults(decode_steps=2, generator_steps=2))
    url = launch(demo, port=free_port(), block=False)
    client = gradio_client.Client(url, verbose=False)
    yield demo, client
    client.close()
    demo.close()


# ---------------------------------------------------------------------------- prompts and the grid
def test_a_prompt_naming_two_classes_selects_both_and_generates_both(served):
    from safetensors.torch import load_file

    _, client = served
    selected, table = client.predict("a seven and a three", api_name="/match_prompt")
    assert selected == ["seven", "three"]
    assert {row[0] for row in table["data"][:2]} == {"seven", "three"}
    grid, _tokens, files, info = client.predict(selected, "MaskGIT", 2, 2, 2.0, 1.0, 0, 2, 1.5,
                                                api_name="/generate")
    saved = load_file(next(f for f in files if f.endswith(".safetensors")))
    assert saved["class_ids"].tolist() == [7, 7, 3, 3] and saved["indices"].shape == (4, 32)
    full_size = Image.open(next(f for f in files if f.endswith(".png")))
    assert full_size.width == 2 * (32 + PADDING) + PADDING  # the images at their own 32 px
    shown = Image.open(grid)
    # One row per class (seven, three), two samples each, shown at >= 128 px with a label under each.
    assert shown.width == 2 * CELL + PADDING
    assert 2 * CELL + PADDING < shown.height < 2 * (CELL + 30) + PADDING
    assert "4 images" in info


def test_one_sample_per_class_is_a_row_not_a_column(pipeline):
    result = pipeline.generate(list(range(10)), "AR", samples_per_class=1, steps=1, decode_steps=1)
    assert result.grid.width == 10 * CELL + PADDING
    assert result.grid.height < CELL + 30  # one row of ten labelled digits
    assert result.labels == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    three_by_two = pipeline.generate(["one", "two", "three"], "AR", samples_per_class=2, steps=1, decode_steps=1)
    assert three_by_two.grid.width == 2 * CELL + PADDING and three_by_two.grid.height > 3 * CELL


def test_a_prompt_matching_nothing_or_empty_is_a_message_in_the_models_domain(served):
    _, client = served
    with pytest.raises(gradio_client.exceptions.AppError, match="a seven and a three"):
        client.predict("   ", api_name="/match_prompt")
    with pytest.raises(gradio_client.exceptions.AppError, match="Closest classes: '(zero|one|two|three|four|five|six|seven|eight|nine)'"):
        client.predict("a qxzvbnmw", api_name="/match_prompt")


def test_hints_follow_the_loaded_models(served):
    demo, _ = served
    prompts = [b for b in demo.blocks.values() if isinstance(b, gr.Textbox) and b.label == "Prompt"]
    assert [b.placeholder for b in prompts] == ["e.g. 'a seven and a three'"]
    steps = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label.startswith("Generator steps")]
    assert len(steps) == 2 and all("AR" in b.info and "MaskGIT" in b.label + b.info for b in steps)
    assert "golden retriever" not in str(demo.config)


def test_upload_errors_name_the_file_not_the_server_path(served, tmp_path):
    _, client = served
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x00not a PNG")
    with pytest.raises(gradio_client.exceptions.AppError) as error:
        client.predict(gradio_client.handle_file(str(fake)), 2, 1.5, 0, api_name="/reconstruct")
    message = str(error.value)
    assert "fake.png" in message and "/" not in message


def test_launch_says_how_to_share_with_the_projects_flag(pipeline, capsys):
    from app.ui import build_demo, launch

    demo = build_demo(pipeline)
    try:
        url = launch(demo, port=free_port(), block=False)
    finally:
        demo.close()
    out = capsys.readouterr().out
    assert f"serving the demo at {url}" in out and "share=true" in out and "share=True" not in out
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING


def test_loader_workers_fit_the_machine():
    from runkit.cli import loader_workers

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert loader_workers(0) == 0 and loader_workers(None) == 0
    assert loader_workers(1000) == cpus - 1
    assert loader_workers(1) == min(1, cpus - 1)


# ---------------------------------------------------------------------------- commands
def _run(args: list[str], cwd: Path) -> str:
    """Run ``python -m <args>`` from ``cwd`` (the project on the path); its stdout + stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


# A digits run small enough for seconds: 16 px, a one-block model, 3 steps, periodic logging off
# (every 500 steps) so only the end-of-run grid, validation and checkpoint appear.
SHORT_RUN = ["tokenizer.train", "experiment=digits", "tokenizer.image_size=16", "tokenizer.code_length=4",
             "tokenizer.enc_depth=1", "tokenizer.dec_depth=1", "train.batch_size=4", "train.max_steps=3",
             "log.num_val_images=4", "log.num_images=2", "log.decode_steps=1", "run_dir=run"]


@pytest.mark.slow
def test_a_short_training_run_ends_with_results_and_a_rerun_says_where(tmp_path):
    out = _run(SHORT_RUN, tmp_path)
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "step_00000003"
    assert "step 3: val PSNR" in out
    assert (run / "images" / "step_00000003.png").is_file() and (checkpoint / "training_state.pt").is_file()
    again = _run(SHORT_RUN, tmp_path)
    assert "already finished step 3" in again and str(checkpoint) in again and "None" not in again
    assert str(run / "images" / "step_00000003.png") in again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no outputs/ folder beside it


@pytest.mark.slow
def test_sampling_to_a_file_leaves_no_hydra_folder(tmp_path):
    weights = make_demo_weights(tmp_path / "weights")
    work = tmp_path / "work"
    work.mkdir()
    out = _run(["generator.sample", f"checkpoint={weights / 'maskgit'}", f"tokenizer.checkpoint={weights / 'tokenizer'}",
                "prompt=a seven and a three", "samples_per_class=1", "sampling.num_steps=1", "decode_steps=1",
                "out=grid.png"], work)
    assert "7 (seven), 3 (three)" in out
    assert sorted(p.name for p in work.iterdir()) == ["grid.png"]


def test_default_run_folders_are_timestamped_under_outputs():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        tokenizer_run = compose("tokenizer_train", overrides=["experiment=digits"], return_hydra_config=True)
        generator_run = compose("generator_train", overrides=["experiment=digits_ar"])
        sample = compose("generator_sample", return_hydra_config=True)
    assert str(tokenizer_run.run_dir).startswith("outputs/tokenizer/digits_stage1a/")
    assert str(generator_run.run_dir).startswith("outputs/generator/digits_ar/")
    for cfg in (tokenizer_run, sample):  # Hydra's own folder is the working directory: it creates nothing
        assert cfg.hydra.run.dir == "." and cfg.hydra.output_subdir is None
        assert list(cfg.hydra.job_logging.handlers) == ["console"]


def test_generator_rerun_of_a_finished_run_reports_its_checkpoint(tmp_path):
    from test_generator_train import config, synthetic_cache

    from generator.train import train

    cache = synthetic_cache(tmp_path / "cache")
    cfg = config(tmp_path / "run", cache, "train.max_steps=2", "checkpoint.every=2")
    first = train(cfg)
    again = train(cfg)
    assert first["checkpoint"] == again["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "step_00000002")
    assert again["step"] == 2 and torch.isfinite(torch.tensor(again["losses"])).all()
