"""benchmarks/emoji_quality.py (issue 25): size-matched baselines, class choice, verdict, and a whole run on a
fake emoji dataset built in tmp (data/emoji is not in CI); rate_distortion's emoji splits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from generator.memorization import (draw_per_class, duplicate_threshold, near_duplicate_rate,
                                    near_duplicates_size_matched)


@pytest.fixture(scope="module")
def quality(benchmark_module):
    return benchmark_module("emoji_quality")


@pytest.fixture(scope="module")
def rate_distortion(benchmark_module):
    return benchmark_module("rate_distortion")


# ------------------------------------------------------------------------------ near duplicates
def spread(classes: list[int], dim: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Items of each class scattered at random (no two close)."""
    rng = torch.Generator().manual_seed(seed)
    labels = torch.tensor([c for c, n in enumerate(classes) for _ in range(n)])
    return torch.rand(len(labels), dim, generator=rng), labels


def test_near_duplicates_are_size_matched_and_never_drawn_with_replacement(quality):
    # Real pool: class 0 holds 15 planted near pairs among 30 items, class 1 only 5 items (fewer than the samples).
    rng = torch.Generator().manual_seed(0)
    base = torch.rand(15, 12, generator=rng)
    pool = torch.cat([base, base + 1e-3 * torch.randn(15, 12, generator=rng), torch.rand(5, 12, generator=rng)])
    pool_labels = torch.tensor([0] * 30 + [1] * 5)
    samples, labels = spread([10, 10], seed=1)
    honest = near_duplicates_size_matched(samples, labels, pool, pool_labels, seed=0)
    assert honest["matched_images"] == 10 + 5 and honest["matched_classes"] == 2
    assert honest["duplicate_threshold"] == pytest.approx(duplicate_threshold(pool, pool_labels))
    assert honest["duplicate_threshold"] < 0.01 and honest["near_duplicate_rate_real"] > 0
    assert honest["near_duplicate_rate"] == honest["near_duplicate_rate_matched"] == 0.0
    # Collapse in the small class: its 10 samples are one point. At all 10 that is 10/20 of the samples; matched,
    # 5 of them are drawn, so 5/15 of the matched samples.
    collapsed = samples.clone()
    collapsed[labels == 1] = samples[labels == 1][:1]
    bad = near_duplicates_size_matched(collapsed, labels, pool, pool_labels, seed=0)
    assert bad["near_duplicate_rate"] == pytest.approx(0.5)
    assert bad["near_duplicate_rate_matched"] == pytest.approx(5 / 15)
    assert bad["near_duplicate_rate_real"] == honest["near_duplicate_rate_real"]  # depends on the pool alone
    checks = quality.verdict({"class_accuracy": 1, "fid_matched": 1, "exact_copy_rate": 0, **bad},
                             {"class_accuracy": 1, "fid": 1})
    assert not checks["near-dup <= 1.3x real"]
    # Every class smaller than the samples: each draw takes all real items, once each (with replacement a draw
    # would hold exact copies, flagged as near duplicates).
    small, small_labels = spread([6, 5], seed=2)
    result = near_duplicates_size_matched(samples, labels, small, small_labels, seed=0)
    threshold = duplicate_threshold(small, small_labels)
    assert result["near_duplicate_rate_real"] == pytest.approx(near_duplicate_rate(small, small_labels, threshold))
    assert result["near_duplicate_rate_real"] < 1


def test_size_matching_keeps_an_honest_generator_at_the_real_rate():
    # Samples from the real distribution (clustered, so near duplicates occur), 40 a class, while the real data
    # have 20 a class: over all 40 the samples find a close neighbour more often than real data over their 20.
    classes, centres_per_class = 30, 30
    centres = torch.rand(classes, centres_per_class, 8, generator=torch.Generator().manual_seed(1))

    def draw(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(classes).repeat_interleave(per_class)
        pick = torch.randint(centres_per_class, (len(labels),), generator=g)
        return centres[labels, pick] + 0.003 * torch.randn(len(labels), 8, generator=g), labels

    pool, pool_labels = draw(20, 101)
    samples, labels = draw(40, 201)
    result = near_duplicates_size_matched(samples, labels, pool, pool_labels, seed=0)
    assert result["matched_images"] == classes * 20
    assert result["near_duplicate_rate"] > 1.5 * result["near_duplicate_rate_real"]  # unmatched: a false alarm
    assert 0.77 < result["near_duplicate_rate_matched"] / result["near_duplicate_rate_real"] < 1.3


def test_draw_per_class_respects_counts_and_refuses_too_many():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    pick = draw_per_class(labels, {0: 2, 2: 1}, torch.Generator().manual_seed(0))
    assert sorted(labels[pick].tolist()) == [0, 0, 2] and len(set(pick.tolist())) == 3
    with pytest.raises(ValueError, match="class 1: 3 items asked, 2 available"):
        draw_per_class(labels, {1: 3}, torch.Generator())


# ------------------------------------------------------------------------------ classes and verdict
def test_choose_classes(quality):
    names = ["a", "b", "c", "d"]
    labels = torch.tensor([0, 1, 1, 1, 2, 2, 2, 3, 3])
    assert quality.choose_classes("2", labels, names) == [1, 2]  # tie 3-3 broken by id
    assert quality.choose_classes("3", labels, names) == [1, 2, 3]
    assert quality.choose_classes("all", labels, names) == [0, 1, 2, 3]
    assert quality.choose_classes("d, 0", labels, names) == [3, 0]
    for bad in ("e", "5", "a,a", "0"):
        with pytest.raises(SystemExit):
            quality.choose_classes(bad, labels, names)


def test_verdict_reads_each_target_against_its_baseline(quality):
    real = {"class_accuracy": 0.5, "fid": 10.0}
    good = {"class_accuracy": 0.4, "fid_matched": 20.0, "exact_copy_rate": 0.05, "near_duplicate_rate_matched": 0.13,
            "near_duplicate_rate_real": 0.1}
    assert all(quality.verdict(good, real).values())
    for key, value, check in (("class_accuracy", 0.39, "class acc >= 0.8x real val"),
                              ("fid_matched", 20.5, "FID@val <= 2x real val"),
                              ("exact_copy_rate", 0.06, "exact copies <= 5%"),
                              ("near_duplicate_rate_matched", 0.14, "near-dup <= 1.3x real")):
        checks = quality.verdict({**good, key: value}, real)
        assert [name for name, ok in checks.items() if not ok] == [check]
    # No token record: copies cannot be cleared.
    assert not quality.verdict({k: v for k, v in good.items() if k != "exact_copy_rate"}, real)["exact copies <= 5%"]
    # A real baseline without near duplicates: only zero passes.
    zero = {**good, "near_duplicate_rate_real": 0.0, "near_duplicate_rate_matched": 0.0}
    assert quality.verdict(zero, real)["near-dup <= 1.3x real"]
    assert not quality.verdict({**zero, "near_duplicate_rate_matched": 0.01}, real)["near-dup <= 1.3x real"]


# ------------------------------------------------------------------------------ a fake emoji dataset
CLASSES = {"faces": 6, "animals": 4, "flags": 5}  # emoji per class; the last two of each are held out
STYLES = ("noto", "twemoji", "openmoji")


def fake_emoji(root):
    """A data/emoji layout: manifest.json and one RGBA PNG per (emoji, style), every image distinct."""
    rng = np.random.default_rng(0)
    records = []
    for c, (name, count) in enumerate(CLASSES.items()):
        for i in range(count):
            key = f"{c:x}{i:02x}"
            records.append({"key": key, "name": f"{name} {i}", "text": key, "class": c, "heldout": i >= count - 2,
                            "styles": list(STYLES)})
            for s, style in enumerate(STYLES):
                image = Image.new("RGBA", (72, 72), (0, 0, 0, 0))
                draw = ImageDraw.Draw(image)
                colour = tuple(int(v) for v in rng.integers(0, 255, 3)) + (255,)
                box = [8 + 4 * s, 8 + 3 * i, 64 - 2 * i, 64 - 3 * s]
                [draw.ellipse, draw.rectangle, draw.polygon][c](box if c < 2 else [(8, 64), (36, 8 + 3 * i), (64, 64)],
                                                                fill=colour)
                (root / style).mkdir(parents=True, exist_ok=True)
                image.save(root / style / f"{key}.png")
    manifest = {"canvas_side": 72, "classes": [{"id": c, "name": n} for c, n in enumerate(CLASSES)],
                "emoji": records, "styles": [{"name": s} for s in STYLES]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def emoji_models(tmp_path_factory):
    """A fake emoji dataset, a tiny tokenizer saved twice (4-step 'teacher', 1-step 'student', the same encoder),
    a tiny MaskGIT on its tokens and a tiny classifier, all with random weights."""
    from evaluation.feature_classifier import ClassifierConfig, FeatureClassifier
    from generator import GeneratorConfig, MaskGIT
    from tokenizer import FlowMo, FlowMoConfig

    tmp = tmp_path_factory.mktemp("emoji")
    fake_emoji(tmp / "emoji")
    torch.manual_seed(0)
    teacher = FlowMo(FlowMoConfig.preset("tiny"))
    teacher.config.decode.steps, teacher.config.decode.cfg = 2, 1.0
    teacher.save_pretrained(tmp / "teacher")
    teacher.config.decode.steps = 1
    teacher.save_pretrained(tmp / "student")
    names = list(CLASSES)
    MaskGIT(GeneratorConfig(model="maskgit", seq_len=teacher.config.num_indices, vocab_size=teacher.config.vocab_size,
                            num_classes=len(names), class_names=names, width=32, depth=1,
                            num_heads=2)).save_pretrained(tmp / "maskgit")
    FeatureClassifier(ClassifierConfig(name="emoji", image_size=32, channels=[8, 16], feature_dim=4,
                                       num_classes=len(names), class_names=names)).save_pretrained(tmp / "classifier")
    return tmp


def test_whole_run_on_a_fake_emoji_dataset(quality, emoji_models, capsys):
    tmp = emoji_models
    results = quality.main(["--generators", str(tmp / "maskgit"), "--tokenizers", str(tmp / "teacher"),
                            str(tmp / "student"), "--classifier", str(tmp / "classifier"), "--root",
                            str(tmp / "emoji"), "--classes", "2", "--per-class", "6", "--fid-draws", "2",
                            "--grid-per-class", "3", "--sampling", "num_steps=2", "--out", str(tmp / "out"),
                            "--work-dir", str(tmp / "work")])
    printed = capsys.readouterr().out
    # The two largest classes by training images: faces (8 = 4 emoji x 2 styles), flags (6).
    assert results["classes"] == ["faces", "flags"]
    assert results["val_counts"] == {"faces": 4, "flags": 4}
    assert [run["tokenizer"] for run in results["runs"]] == [str(tmp / "teacher"), str(tmp / "student")]
    assert [run["decoder"]["steps"] for run in results["runs"]] == [2, 1]
    teacher, student = (run["values"] for run in results["runs"])
    for values in (teacher, student):
        assert len(values["fid_draws"]) == 2 and all(np.isfinite(values["fid_draws"]))
        assert 0 <= values["near_duplicate_rate_matched"] <= 1 and values["matched_images"] == 12
        assert values["exact_copy_rate"] == 0.0  # random tokens are no training image's
    # Same seeds, same tokens: the decoders differ in images only, so memorization by tokens agrees.
    assert teacher["exact_copy_rate"] == student["exact_copy_rate"]
    assert teacher["near_duplicate_rate_real"] == student["near_duplicate_rate_real"]
    assert 0 <= results["real_val"]["class_accuracy"] <= 1 and results["real_val"]["exact_copy_rate"] == 0.0
    for line in ("FID@val", "near-dup@k", "both drawn without replacement", "real val (held-out emoji, 8 images)",
                 "real test_style", "faces 8/4/6, flags 6/4/5\n"):
        assert line in printed
    assert printed.count("| maskgit (") == 2 and printed.count("exact copies <= 5%: yes") == 2
    for run in results["runs"]:
        with Image.open(tmp / "out" / run["grid"]) as grid:
            # A name column, 3 samples and 3 real images of 64-px cells with a gap between, two class rows.
            assert grid.size == (150 + 6 * (64 + 2) + 32, 28 + 2 * (64 + 2))
    assert json.loads((tmp / "out" / "results.json").read_text())["classes"] == ["faces", "flags"]


def test_a_generator_of_other_classes_is_refused(quality, emoji_models):
    from generator import GeneratorConfig, MaskGIT
    from tokenizer import load_flowmo

    tmp = emoji_models
    config = load_flowmo(tmp / "teacher").config
    MaskGIT(GeneratorConfig(model="maskgit", seq_len=config.num_indices, vocab_size=config.vocab_size, num_classes=10,
                            width=32, depth=1, num_heads=2)).save_pretrained(tmp / "digits_like")
    MaskGIT(GeneratorConfig(model="maskgit", seq_len=config.num_indices, vocab_size=config.vocab_size, num_classes=3,
                            class_names=["faces", "flags", "animals"], width=32, depth=1,
                            num_heads=2)).save_pretrained(tmp / "other_build")
    for name, error in (("digits_like", "10 classes, the emoji dataset 3"),
                        ("other_build", "class 1 is 'flags', the emoji dataset's 'animals'")):
        with pytest.raises(SystemExit, match=error):
            quality.main(["--generators", str(tmp / name), "--tokenizers", str(tmp / "teacher"),
                          "--classifier", str(tmp / "classifier"), "--root", str(tmp / "emoji"), "--classes", "all",
                          "--per-class", "2", "--fid-draws", "1", "--out", str(tmp / "out2"), "--work-dir",
                          str(tmp / "work2")])
    assert not (tmp / "out2" / "results.json").exists()


# ------------------------------------------------------------------------------ rate_distortion on emoji
def test_rate_distortion_reads_the_emoji_splits(rate_distortion, emoji_models):
    root = str(emoji_models / "emoji")

    def held_out(**options):
        args = argparse.Namespace(**{"data": "emoji", "root": root, "split": None, "num_images": None, **options})
        return rate_distortion.load_held_out(args, 32)

    images, labels, name = held_out()
    assert name == "emoji_val" and images.shape == (12, 3, 32, 32) and sorted(set(labels)) == [0, 1, 2]
    images, labels, name = held_out(split="test_style")
    assert name == "emoji_test_style" and len(labels) == sum(CLASSES.values())
    with pytest.raises(SystemExit, match="--data emoji has splits val, test_style, train"):
        held_out(split="test_unseen")
    # Scripts whose options have no --split or --root (decoder_comparison) still load digits.
    assert rate_distortion.resolve_split(argparse.Namespace(data="digits")) is None
    with pytest.raises(SystemExit, match="--split applies to"):
        rate_distortion.resolve_split(argparse.Namespace(data="digits", split="val"))
    args = rate_distortion.parse_args(["--checkpoint", "x", "--data", "emoji", "--split", "test_style"])
    assert rate_distortion.resolve_split(args) == "test_style"


# ------------------------------------------------------------------------------ the demo's prompt grid
@pytest.mark.skipif(not all((Path(__file__).resolve().parents[1] / "app/weights" / name).is_dir()
                            for name in ("emoji_tokenizer", "emoji_tokenizer_sampling", "emoji_ar")),
                    reason="emoji weights not shipped")
def test_demo_prompt_grid_draws_each_prompt_through_the_demo(benchmark_module, tmp_path):
    demo_prompts = benchmark_module("demo_prompts")
    rows, class_names = demo_prompts.prompt_rows("emoji", "AR", ["red heart", "a flag"], samples=3, seed=0)
    assert [(prompt, name, len(images)) for prompt, name, images in rows] == [
        ("red heart", "heart", 3), ("a flag", "flag+subdivision-flag", 3)]
    assert len({image.tobytes() for _, _, images in rows for image in images}) == 6  # six different samples
    no_data = (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    picture = Image.open(demo_prompts.draw(rows, class_names, no_data, tmp_path / "prompts.png", "t"))
    # class_grid's layout: 150-px name column, 2x cells of 64 + 2 px, a half-cell gap, a 28-px title band
    assert picture.size == (150 + 3 * (64 + 2) + 32, 28 + 2 * (64 + 2))
    red = np.asarray(rows[0][2][0].convert("RGB"), dtype=float)
    assert red[..., 0].mean() > red[..., 2].mean()  # a heart through the emoji decoder comes out red
