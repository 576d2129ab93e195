"""The demo's plain-Python pipeline: generate, reconstruct, token edits, evaluate, loading, limits."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app import token_edits
from app.limits import DemoLimits, check_float, check_int
from app.models import DEFAULT_WEIGHTS_DIR, EXAMPLES_DIR, load_models, status_line
from app.pipeline import DemoPipeline
from app.settings import DemoSettings
from app.visualize import for_display, grid_shape, token_heatmaps

from app_helpers import DIGIT_NAMES, MAIN_DECODE, PHOTO_DECODE, make_demo_weights, make_photo_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    return make_demo_weights(tmp_path_factory.mktemp("demo_weights"))


@pytest.fixture(scope="module")
def pipeline(weights_dir, tmp_path_factory) -> DemoPipeline:
    settings = DemoSettings(limits=DemoLimits(max_batch=6, max_generator_steps=16, max_decode_steps=20),
                            work_dir=str(tmp_path_factory.mktemp("work")))
    return DemoPipeline.load(weights_dir=weights_dir, settings=settings)


@pytest.fixture(scope="module")
def photo_weights_dir(tmp_path_factory) -> Path:
    return make_demo_weights(tmp_path_factory.mktemp("demo_weights_photo"), photo=True)


@pytest.fixture(scope="module")
def photo_pipeline(photo_weights_dir) -> DemoPipeline:
    return DemoPipeline.load(weights_dir=photo_weights_dir)


def _not_blank(image: Image.Image) -> bool:
    return float(np.asarray(image, dtype=np.float32).std()) > 1.0


# ---------------------------------------------------------------------------- Generate
def test_generate_images_labels_and_progress(pipeline):
    updates = []
    result = pipeline.generate(["three", "seven"], "MaskGIT", samples_per_class=2, steps=4, decode_steps=3,
                               seed=1, progress=lambda f, m: updates.append((f, m)))
    assert result.images.shape == (4, 3, 32, 32)
    assert result.images.min() >= -1 and result.images.max() <= 1
    assert result.indices.shape == (4, 32) and result.indices.dtype == torch.int64
    assert result.class_ids == [3, 3, 7, 7] and result.labels == ["three", "three", "seven", "seven"]
    assert _not_blank(result.grid) and _not_blank(result.token_map)
    fractions = [f for f, _ in updates]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any("decoding" in m for _, m in updates) and any("sampling" in m for _, m in updates)


def test_generate_is_reproducible_and_accepts_ids_or_names(pipeline):
    by_name = pipeline.generate(["one"], "AR", steps=1, decode_steps=2, seed=5)
    by_id = pipeline.generate([1], "ar", steps=1, decode_steps=2, seed=5)
    other = pipeline.generate([1], "AR", steps=1, decode_steps=2, seed=6)
    assert torch.equal(by_name.indices, by_id.indices) and torch.equal(by_name.images, by_id.images)
    assert not torch.equal(by_name.images, other.images)


@pytest.mark.parametrize("kwargs, message", [
    (dict(classes=[]), "select at least one class"),
    (dict(classes=["eleven"]), "unknown class 'eleven'"),
    (dict(classes=[10]), r"class id must be in \[0, 9\]"),
    (dict(steps=0), r"generator steps must be in \[1, 16\]"),
    (dict(steps=10_000), r"generator steps must be in \[1, 16\]"),
    (dict(steps=2.5), "generator steps must be an integer"),
    (dict(decode_steps=21), r"decoder steps must be in \[1, 20\]"),
    (dict(temperature=0.0), "temperature must be in"),
    (dict(cfg=float("nan")), "generator CFG must be a number"),
    (dict(samples_per_class=4, classes=[1, 2]), "at most 6 per request"),
    (dict(generator="diffusion"), "generator 'diffusion' is not loaded"),
])
def test_generate_rejects_bad_input_with_clear_messages(pipeline, kwargs, message):
    arguments = dict(classes=[1], generator="MaskGIT", steps=2, decode_steps=2)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        pipeline.generate(arguments.pop("classes"), **arguments)


# ---------------------------------------------------------------------------- Reconstruct
def test_reconstruct_reports_psnr_bpp_and_unavailable_lpips(pipeline):
    from evaluation.metrics import psnr

    result = pipeline.reconstruct(EXAMPLES_DIR / "digit_7.png", decode_steps=3, decode_cfg=1.0)
    assert result.original.shape == result.reconstruction.shape == (1, 3, 32, 32)
    assert result.psnr == pytest.approx(float(psnr(result.original, result.reconstruction)[0]))
    assert result.bits_per_pixel == pytest.approx(16 * 12 / 32**2) and result.bits == 16 * 12
    assert result.lpips is None
    rows = dict(result.metrics_rows())
    assert rows["LPIPS"].startswith("unavailable") and "lpips.weights=" in rows["LPIPS"]
    assert rows["bits used"] == "192" and rows["tokenizer"] == "Digits tokenizer"
    assert rows["decoder"] == "3 steps, CFG 1, 3 network evaluations" and float(rows["decode time (ms)"]) >= 0
    assert result.decode_ms > 0
    assert result.comparison.size[0] > result.comparison.size[1] and _not_blank(result.comparison)


def test_reconstruct_with_token_search_comes_closer_with_the_same_bits(pipeline):
    plain = pipeline.reconstruct(EXAMPLES_DIR / "digit_7.png", decode_steps=2, seed=1)
    searched = pipeline.reconstruct(EXAMPLES_DIR / "digit_7.png", decode_steps=2, seed=1, search_passes=1)
    assert searched.psnr >= plain.psnr and searched.bits == plain.bits
    differing = sum(bin(int(a) ^ int(b)).count("1") for a, b in zip(searched.indices[0], plain.indices[0]))
    assert searched.bits_changed == differing > 0
    rows, plain_rows = dict(searched.metrics_rows()), dict(plain.metrics_rows())
    assert rows["token search"] == f"1 pass, {searched.bits_changed} of 192 bits changed"
    assert plain_rows["token search"] == "off (the encoder's tokens)" and plain.bits_changed == 0
    assert float(rows["encode time (ms)"]) > float(plain_rows["encode time (ms)"])
    with pytest.raises(ValueError, match=r"token search passes must be in \[0, 8\]"):
        pipeline.reconstruct(EXAMPLES_DIR / "digit_7.png", search_passes=9)
    small = DemoPipeline(pipeline.models, DemoSettings(limits=DemoLimits(max_search_evaluations=1000)))
    with pytest.raises(ValueError, match=r"would take 1,536 decoder evaluations \(192 bits x 2 per decode"):
        small.reconstruct(EXAMPLES_DIR / "digit_7.png", decode_steps=2, decode_cfg=1.0, search_passes=4)
    assert small.reconstruct(EXAMPLES_DIR / "digit_7.png", decode_steps=2, decode_cfg=1.0, search_passes=2).psnr > 0


def test_reconstruct_accepts_grayscale_rgba_and_bytes(pipeline, tmp_path):
    grey = pipeline.reconstruct(EXAMPLES_DIR / "digit_3.png", decode_steps=2)  # a mode-L PNG
    assert grey.original.shape == (1, 3, 32, 32)
    assert torch.allclose(grey.original[:, 0], grey.original[:, 1])  # grey replicated to RGB
    rgba = Image.new("RGBA", (40, 50), (255, 0, 0, 0))  # fully transparent -> composited on white
    rgba.save(tmp_path / "rgba.png")
    result = pipeline.reconstruct(str(tmp_path / "rgba.png"), decode_steps=2)
    assert torch.allclose(result.original, torch.ones_like(result.original))
    data = (EXAMPLES_DIR / "digit_7.png").read_bytes()
    assert pipeline.reconstruct(data, decode_steps=2).original.shape == (1, 3, 32, 32)


def test_reconstruct_rejects_non_images_and_huge_images(pipeline, tmp_path):
    from runkit.images import ImageDecodeError

    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(ImageDecodeError, match="notes.png"):
        pipeline.reconstruct(str(text))
    with pytest.raises(ValueError, match="upload an image"):
        pipeline.reconstruct(None)
    small_limits = DemoPipeline(pipeline.models, DemoSettings(limits=DemoLimits(max_image_pixels=1000)))
    with pytest.raises(ImageDecodeError, match="pixels"):
        small_limits.reconstruct(EXAMPLES_DIR / "digit_7.png")  # 64 x 64


def test_reconstruct_with_the_photo_tokenizer_uses_it(photo_pipeline):
    photo = EXAMPLES_DIR / "photo_apple.png"
    result = photo_pipeline.reconstruct(photo, tokenizer="photos")
    assert result.original.shape == result.reconstruction.shape == (1, 3, 16, 16)  # its size, not the main 32
    assert result.bits_per_pixel == pytest.approx(16 * 12 / 16**2) and result.tokenizer == "Photo tokenizer"
    assert (result.decode_steps, result.decode_cfg) == (PHOTO_DECODE["steps"], PHOTO_DECODE["cfg"])
    by_label = photo_pipeline.reconstruct(photo, tokenizer="Photo tokenizer")
    assert torch.equal(by_label.reconstruction, result.reconstruction)  # same model, same seed
    main = photo_pipeline.reconstruct(photo)
    assert main.original.shape == (1, 3, 32, 32) and main.tokenizer == "Digits tokenizer"
    assert (main.decode_steps, main.decode_cfg) == (MAIN_DECODE["steps"], MAIN_DECODE["cfg"])
    explicit = photo_pipeline.reconstruct(photo, decode_steps=1, decode_cfg=0.0, tokenizer="photos")
    assert (explicit.decode_steps, explicit.decode_cfg) == (1, 0.0)
    assert "Photo tokenizer" in photo_pipeline.status() and "16px" in photo_pipeline.status()


def test_unknown_or_absent_tokenizer_is_a_clear_error(pipeline, photo_pipeline):
    with pytest.raises(ValueError, match=r"tokenizer 'faces' is not loaded; loaded: 'digits' \(Digits tokenizer\), "
                                         r"'photos' \(Photo tokenizer\)"):
        photo_pipeline.reconstruct(EXAMPLES_DIR / "digit_3.png", tokenizer="faces")
    with pytest.raises(ValueError, match="tokenizer 'photos' is not loaded"):
        pipeline.reconstruct(EXAMPLES_DIR / "digit_3.png", tokenizer="photos")
    assert [c.name for c in pipeline.tokenizer_choices()] == ["digits"]
    assert [c.name for c in photo_pipeline.tokenizer_choices()] == ["digits", "photos"]


def test_photo_tokenizer_setting_disables_or_points_elsewhere(photo_weights_dir, weights_dir, tmp_path):
    assert load_models(weights_dir=photo_weights_dir, photo_tokenizer=False).extra_tokenizers == {}
    elsewhere = make_photo_tokenizer(tmp_path / "my_photo_tokenizer")
    models = load_models(weights_dir=weights_dir, photo_tokenizer=elsewhere)
    assert models.extra_tokenizer_sources == {"photos": str(elsewhere)}
    assert models.tokenizers["photos"].config.image_size == 16
    with pytest.raises(FileNotFoundError, match="tokenizer.photo_checkpoint"):
        load_models(weights_dir=weights_dir, photo_tokenizer=tmp_path / "missing")


def test_a_distilled_tokenizer_beside_the_embedded_one_is_preferred(tmp_path):
    from tokenizer import load_flowmo

    weights = make_demo_weights(tmp_path / "weights", photo=True)
    teachers = load_models(weights_dir=weights)
    assert teachers.tokenizer.decode_evaluations() > 1 and teachers.tokenizer_source == str(weights / "tokenizer")
    for name in ("tokenizer", "photo_tokenizer"):  # a student: same weights, a 1-step decode default
        student = load_flowmo(weights / name)
        student.config.decode.steps, student.config.decode.cfg = 1, 1.0
        student.save_pretrained(weights / f"{name}_distilled")
    models = load_models(weights_dir=weights)
    assert models.tokenizer_source == str(weights / "tokenizer_distilled")
    assert models.extra_tokenizer_sources["photos"] == str(weights / "photo_tokenizer_distilled")
    assert models.tokenizer.decode_evaluations() == models.extra_tokenizers["photos"].decode_evaluations() == 1
    assert "decodes in 1 network evaluation ·" in status_line(models, DemoSettings())
    assert set(models.generators) == {"maskgit", "ar"}  # same encoder architecture: the generators still fit
    result = DemoPipeline(models).reconstruct(EXAMPLES_DIR / "digit_7.png")
    assert dict(result.metrics_rows())["decoder"] == "1 step, CFG 1, 1 network evaluation"


def test_reload_keeps_the_photo_tokenizer(photo_weights_dir):
    demo = DemoPipeline.load(weights_dir=photo_weights_dir, settings=DemoSettings(model_dirs=(str(photo_weights_dir),)))
    photo = demo.models.extra_tokenizers["photos"]
    demo.reload(str(photo_weights_dir / "tokenizer"), None, str(photo_weights_dir / "maskgit"), None)
    assert demo.models.extra_tokenizers["photos"] is photo and demo.generator_names == ["MaskGIT"]


def test_decoder_defaults_come_from_the_tokenizer(pipeline):
    # generate, edit_tokens and reconstruct leave decoding to config.decode when given no numbers
    assert pipeline.models.tokenizer.config.decode.steps == MAIN_DECODE["steps"]
    steps = []
    pipeline.generate([1], "MaskGIT", steps=1, progress=lambda f, m: steps.append(m))
    assert f"decoding: step {MAIN_DECODE['steps']}/{MAIN_DECODE['steps']}" in steps
    choice = pipeline.tokenizer_choice()
    assert (choice.decode_steps, choice.decode_cfg) == (MAIN_DECODE["steps"], MAIN_DECODE["cfg"])


def test_examples_match_the_tokenizer_domain(photo_pipeline, weights_dir):
    digits, photos = photo_pipeline.tokenizer_choices()
    assert [Path(p).name for p in digits.examples] == ["digit_3.png", "digit_7.png"]
    assert 4 <= len(photos.examples) <= 6
    assert all(Path(p).name.startswith("photo_") and Path(p).is_file() for p in photos.examples)
    assert "digit" in digits.hint and "photo" in photos.hint and "16×16" in photos.hint
    # A tokenizer loaded from a checkpoint (no digit generators) is offered real photos, not digits.
    loaded = DemoPipeline(load_models(weights_dir / "tokenizer", photo_tokenizer=False)).tokenizer_choice()
    assert loaded.name == "images" and loaded.examples == photos.examples


def test_photo_examples_are_cut_from_the_unseen_package():
    from imagedata.photo_corpus import DEFAULT_UNSEEN, read_manifest

    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES_DIR / "make_examples.py")
    make_examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_examples)
    assert sorted(EXAMPLES_DIR.glob("photo_*.png")) == sorted(EXAMPLES_DIR / f"photo_{n}.png"
                                                              for n in make_examples.PHOTOS)
    for name, (_, (left, top, right, bottom)) in make_examples.PHOTOS.items():
        shipped = Image.open(EXAMPLES_DIR / f"photo_{name}.png")
        assert shipped.size == (right - left, bottom - top) and right - left == bottom - top, name
    corpus = Path(__file__).resolve().parents[1] / "data" / "photo_corpus"
    manifest = read_manifest(corpus)
    if manifest is None:  # CI downloads no package: the pixels are checked where the corpus was built
        return
    records = {record["file"]: record for record in manifest["files"]}
    for name, (_, box) in make_examples.PHOTOS.items():
        path = make_examples.source_file(corpus, name)
        record = records[path.relative_to(corpus).as_posix()]
        assert record["split"] == "test_unseen" and record["package"] == DEFAULT_UNSEEN
        shipped = np.asarray(Image.open(EXAMPLES_DIR / f"photo_{name}.png").convert("RGB"))
        assert np.array_equal(shipped, np.asarray(Image.open(path).convert("RGB").crop(box))), name


def test_reconstruct_with_random_lpips_is_marked_uncalibrated(pipeline):
    random_lpips = DemoPipeline(pipeline.models, DemoSettings(allow_random_lpips=True))
    result = random_lpips.reconstruct(EXAMPLES_DIR / "digit_7.png", decode_steps=2)
    assert result.lpips is not None and result.lpips >= 0 and not result.lpips_calibrated
    assert "UNCALIBRATED" in dict(result.metrics_rows())["LPIPS"]


# ---------------------------------------------------------------------------- Tokens
def test_token_edits_are_exact_operations():
    a = torch.arange(8)[None].repeat(2, 1)
    b = a + 100
    a_edit, b_edit = token_edits.swap_span(a, b, 2, 5)
    assert a_edit[0].tolist() == [0, 1, 102, 103, 104, 5, 6, 7]
    assert b_edit[0].tolist() == [100, 101, 2, 3, 4, 105, 106, 107]
    assert a[0].tolist() == list(range(8))  # inputs untouched
    changed = token_edits.randomize(a + 1000, 0.5, 64, torch.Generator().manual_seed(0))
    assert int((changed[0] < 64).sum()) == 4 and torch.equal(changed < 64, (changed < 64)[:1].expand(2, -1))
    rng = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(token_edits.mix(a, b, 0.0, rng()), a) and torch.equal(token_edits.mix(a, b, 1.0, rng()), b)
    from_b = [int((token_edits.mix(a, b, alpha, rng()) >= 100).sum()) for alpha in (0.2, 0.5, 0.8)]
    assert from_b == sorted(from_b)
    with pytest.raises(ValueError, match="span"):
        token_edits.swap_span(a, b, 5, 5)
    with pytest.raises(ValueError, match="alpha"):
        token_edits.mix(a, b, 1.5)


def test_edit_tokens_full_swap_decodes_to_the_other_image(pipeline):
    a, b = EXAMPLES_DIR / "digit_3.png", EXAMPLES_DIR / "digit_7.png"
    result = pipeline.edit_tokens(a, b, "swap", start=0, end=32, decode_steps=2)
    assert result.labels == ["A", "B", "A + B[0:32]", "B + A[0:32]"]
    # Same noise for every cell: A with all of B's tokens decodes exactly like B.
    assert torch.allclose(result.images[2], result.images[1], atol=1e-5)
    assert torch.allclose(result.images[3], result.images[0], atol=1e-5)
    kept = pipeline.edit_tokens(a, None, "randomize", fraction=0.0, decode_steps=2)
    assert torch.equal(kept.indices[0], kept.indices[1])
    mixed = pipeline.edit_tokens(a, b, "mix", alpha=0.5, decode_steps=2)
    assert mixed.images.shape == (3, 3, 32, 32) and _not_blank(mixed.grid)


def test_edit_tokens_bad_input(pipeline):
    a = EXAMPLES_DIR / "digit_3.png"
    with pytest.raises(ValueError, match="image B: upload an image"):
        pipeline.edit_tokens(a, None, "swap")
    with pytest.raises(ValueError, match=r"span end must be in \[5, 32\]"):
        pipeline.edit_tokens(a, a, "swap", start=4, end=99)
    with pytest.raises(ValueError, match="operation 'blend'"):
        pipeline.edit_tokens(a, a, "blend")


# ---------------------------------------------------------------------------- prompts
def test_prompt_matches_digit_classes(pipeline):
    matches = pipeline.match_prompt("a seven", top_k=3)
    assert matches[0][:2] == (7, "seven") and len(matches) <= 3
    from generator.prompts import NoMatchError, PromptError

    with pytest.raises(PromptError):
        pipeline.match_prompt("")
    with pytest.raises(NoMatchError):
        pipeline.match_prompt("qxzvbnmw")


# ---------------------------------------------------------------------------- Evaluate
@pytest.mark.slow
def test_evaluate_small_run_is_marked_uncalibrated_and_resumes(pipeline, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(reference / f"{i}.png")
    evaluator = DemoPipeline(pipeline.models, DemoSettings(eval_reference=str(reference), work_dir=str(tmp_path),
                                                           features="inception", limits=DemoLimits(max_batch=10)))
    updates = []
    result = evaluator.evaluate(10, "MaskGIT", steps=2, decode_steps=2, progress=lambda f, m: updates.append(f))
    assert not result.calibrated and result.num_samples == 10
    assert {"fid", "isc_mean", "precision", "recall"} <= set(result.metrics)
    assert all("UNCALIBRATED" in value for name, value in result.rows if name in ("gFID", "IS"))
    assert "UNCALIBRATED" in result.summary and _not_blank(result.plot) and result.grid is not None
    assert updates[-1] == pytest.approx(1.0)
    again = evaluator.evaluate(10, "MaskGIT", steps=2, decode_steps=2)
    assert again.metrics["fid"] == pytest.approx(result.metrics["fid"]) and again.out_dir == result.out_dir


def test_evaluate_needs_a_reference_for_non_digit_classes(pipeline, tmp_path):
    with pytest.raises(ValueError, match="at least 10|must be in"):
        pipeline.evaluate(3)
    models = pipeline.models
    renamed = type(models)(models.tokenizer, models.tokenizer_source, models.generators, models.generator_sources,
                           [f"c{i}" for i in range(10)])
    with pytest.raises(ValueError, match="evaluate.reference="):
        DemoPipeline(renamed, DemoSettings(work_dir=str(tmp_path))).evaluate(10)


# ---------------------------------------------------------------------------- loading
def test_status_names_device_sizes_and_bpp(pipeline):
    status = pipeline.status()
    for part in ("device cpu", "float32", "Digits tokenizer", "32 tokens × vocab 64", "0.1875 BPP", "MaskGIT", "AR",
                 "10 classes"):
        assert part in status
    assert pipeline.generator_names == ["MaskGIT", "AR"] and pipeline.class_names == DIGIT_NAMES


def test_load_errors_are_clear(weights_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="embedded demo weights not found"):
        load_models(weights_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds a MaskGIT generator, not AR"):
        load_models(weights_dir / "tokenizer", ar=weights_dir / "maskgit")
    stale = make_demo_weights(tmp_path / "stale", tokenizer_hash="0123456789abcdef")
    with pytest.raises(ValueError, match="does not fit the loaded tokenizer"):
        load_models(weights_dir / "tokenizer", maskgit=stale / "maskgit")
    with pytest.raises(FileNotFoundError, match="tokenizer.checkpoint"):
        load_models(tmp_path / "missing_tokenizer")
    only_tokenizer = DemoPipeline(load_models(weights_dir / "tokenizer"))
    assert "no generator loaded" in only_tokenizer.status()
    with pytest.raises(ValueError, match="no generator is loaded"):
        only_tokenizer.generate([0], "MaskGIT")


def test_reload_swaps_the_model_set(weights_dir, tmp_path):
    demo = DemoPipeline.load(weights_dir=weights_dir, settings=DemoSettings(model_dirs=(str(weights_dir),)))
    status = demo.reload("tokenizer", None, str(weights_dir / "maskgit"), None)  # relative: to model_dirs[0]
    assert demo.generator_names == ["MaskGIT"] and "AR" not in status


def test_shipped_weights_load_and_match_the_current_code():
    import yaml

    from generator.config import FORMAT_VERSION as GENERATOR_FORMAT
    from tokenizer.config import FORMAT_VERSION as TOKENIZER_FORMAT

    from tokenizer import load_flowmo

    configs = Path(__file__).resolve().parents[1] / "configs"
    models = load_models()
    shipped = {"tokenizer": (models.tokenizer, "digits", "digits_distill"),
               "photo_tokenizer": (models.extra_tokenizers["photos"], "photos32", "photo_corpus_distill")}
    for folder, (loaded, config_name, distill_experiment) in shipped.items():
        teacher = load_flowmo(DEFAULT_WEIGHTS_DIR / folder)
        meta = json.loads((DEFAULT_WEIGHTS_DIR / folder / "config.json").read_text())
        assert meta["format_version"] == TOKENIZER_FORMAT
        assert meta["architecture_hash"] == teacher.config.architecture_hash() == loaded.config.architecture_hash()
        # The decoder defaults saved with the weights are the ones its training config sets.
        recipe = yaml.safe_load((configs / "tokenizer" / f"{config_name}.yaml").read_text())
        assert {k: teacher.config.decode.__dict__[k] for k in recipe["decode"]} == recipe["decode"]
        # The demo decodes with the distilled student: its experiment's step count, no guidance pass,
        # and the teacher's encoder bit for bit, so the tokens (and the generators) are unchanged.
        distill = yaml.safe_load((configs / "experiment" / f"{distill_experiment}.yaml").read_text())["distill"]
        assert (loaded.config.decode.steps, loaded.config.decode.cfg) == (distill["steps"], 1.0)
        assert loaded.decode_evaluations() == distill["steps"]
        for name, value in teacher.encoder.state_dict().items():
            assert torch.equal(loaded.encoder.state_dict()[name].cpu(), value), name
    assert set(models.generators) == {"maskgit", "ar"}
    for slot, model in models.generators.items():
        generator_meta = json.loads((DEFAULT_WEIGHTS_DIR / slot / "config.json").read_text())
        assert generator_meta["format_version"] == GENERATOR_FORMAT
        assert model.config.tokenizer_hash == models.tokenizer.config.architecture_hash()
    assert models.class_names == DIGIT_NAMES
    assert "python -m" in (DEFAULT_WEIGHTS_DIR / "README.md").read_text()


# ---------------------------------------------------------------------------- limits, pictures, CLI
def test_limits_and_checks():
    assert DemoLimits.from_mapping({"max_batch": 4}).max_batch == 4
    with pytest.raises(ValueError, match="unknown demo limit"):
        DemoLimits.from_mapping({"max_batches": 4})
    with pytest.raises(ValueError, match="limits.max_batch must be a positive number"):
        DemoLimits.from_mapping({"max_batch": 0})
    assert check_int("steps", 8.0, 1, 10) == 8 and check_int("steps", "3", 1, 10) == 3
    with pytest.raises(ValueError, match="steps must be an integer"):
        check_int("steps", True, 1, 10)
    with pytest.raises(ValueError, match=r"\(0.0, 1.0\]"):
        check_float("t", 0.0, 0.0, 1.0, low_inclusive=False)


def test_token_heatmaps_and_display_scaling():
    assert grid_shape(512) == (16, 32) and grid_shape(32) == (4, 8) and grid_shape(7) == (1, 7)
    maps = token_heatmaps(torch.tensor([[0, 63] * 16]), vocab_size=64, cell=2)
    assert maps.shape == (1, 3, 8, 16) and maps.min() >= -1 and maps.max() <= 1
    assert not torch.equal(maps[..., :2, :2], maps[..., :2, 2:4])  # lowest and highest index differ
    assert for_display(torch.zeros(1, 3, 32, 32)).shape[-1] == 128
    assert for_display(torch.zeros(1, 3, 256, 256)).shape[-1] == 256


def test_app_config_matches_the_code():
    from hydra import compose, initialize_config_dir

    from app.ui import SamplingDefaults

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="app", overrides=["limits.max_batch=3", "generator.maskgit=/x"])
    assert DemoLimits.from_mapping(dict(cfg.limits)).max_batch == 3
    assert SamplingDefaults.from_mapping(dict(cfg.sampling)) == SamplingDefaults()
    assert SamplingDefaults().decode_steps is None and SamplingDefaults().decode_cfg is None  # the model's defaults
    assert cfg.generator.maskgit == "/x" and cfg.tokenizer.checkpoint is None
    assert cfg.tokenizer.photo_checkpoint is None  # the embedded photo tokenizer when present


def test_cli_help_lists_the_options():
    result = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "tokenizer:" in result.stdout and "max_decode_steps" in result.stdout


def test_a_single_class_name_or_id_is_not_split_into_characters(pipeline):
    assert pipeline.resolve_classes(3) == [3]
    assert pipeline.resolve_classes(pipeline.class_names[3]) == [3]


def test_compile_is_off_by_default_for_interactive_requests(pipeline):
    choice = pipeline.compile_choice()
    assert choice.value is False and "batch per request" in choice.reason


@pytest.mark.slow
def test_background_compile_swaps_in_equal_models_without_blocking(weights_dir, tmp_path):
    settings = DemoSettings(compile=True, work_dir=str(tmp_path))
    pipeline = DemoPipeline.load(weights_dir=weights_dir, settings=settings)
    eager = pipeline.models
    thread = pipeline.compile_in_background()
    served = pipeline.generate(["two"], "MaskGIT", steps=2, decode_steps=2, seed=3)  # answered meanwhile
    thread.join(timeout=600)
    assert not thread.is_alive() and pipeline.models is not eager
    compiled = pipeline.generate(["two"], "MaskGIT", steps=2, decode_steps=2, seed=3)
    # Compiled kernels round differently: a near-tie between two tokens may flip, nothing more.
    assert (compiled.indices == served.indices).float().mean() >= 0.9
    if torch.equal(compiled.indices, served.indices):
        torch.testing.assert_close(compiled.images, served.images, atol=2e-3, rtol=0)
    assert list(pipeline.models.tokenizer.state_dict()) == list(eager.tokenizer.state_dict())
