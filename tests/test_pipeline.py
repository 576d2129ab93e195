"""The public generation API (generator.Pipeline): the README's snippet, what it returns, its errors, and the
demo running on the same object."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.pipeline import DemoPipeline
from app.settings import DemoSettings
from generator import Pipeline
from generator.prompts import NoMatchError
from tokenizer import search_code

from app_helpers import make_demo_weights

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_demo_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def pipe(weights) -> Pipeline:
    return Pipeline.from_pretrained(weights / "maskgit", weights / "tokenizer")


def readme_snippet() -> str:
    """The Python block of the README's section on the Python API."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_snippet_runs_and_writes_images(tmp_path, monkeypatch):
    # The snippet names the shipped models as a user in a checkout does: relative to the repository root.
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "weights").symlink_to(REPO / "app" / "weights")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_snippet(), "README.md", "exec"), {})
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "reconstruction.png" in written and len(written) >= 2
    for name in written:
        with Image.open(tmp_path / name) as image:
            assert image.size == (32, 32) and np.asarray(image).std() > 1.0


def test_call_returns_pil_images_of_the_named_classes_repeatably(pipe):
    images = pipe("a seven and a three", num_images=3, seed=4, num_steps=2)
    assert len(images) == 3 and all(isinstance(image, Image.Image) and image.size == (32, 32) for image in images)
    again = pipe("a seven and a three", num_images=3, seed=4, num_steps=2)
    other = pipe("a seven and a three", num_images=3, seed=5, num_steps=2)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, other))
    assert pipe.class_ids("a seven and a three") == [7, 3]
    assert pipe.class_ids(["seven", 3]) == [7, 3] and pipe.class_ids("seven") == [7] and pipe.class_ids(2) == [2]
    generated = pipe.generate([7, 3, 7], seed=4, num_steps=2, batch_size=2)
    assert generated.class_ids == [7, 3, 7] and generated.indices.shape == (3, 32)
    assert generated.images.shape == (3, 3, 32, 32) and generated.images.dtype == torch.float32


def test_tokenize_decode_and_reconstruct_agree(pipe, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    indices = pipe.tokenize(tmp_path / "x.png")
    assert indices.shape == (1, 32) and indices.dtype == torch.int64
    assert torch.equal(pipe.tokenize([tmp_path / "x.png", Image.open(tmp_path / "x.png")]), indices.repeat(2, 1))
    decoded = pipe.decode(indices, seed=3)
    assert decoded.shape == (1, 3, 32, 32) and decoded.min() >= -1 and decoded.max() <= 1
    reconstruction = pipe.reconstruct(tmp_path / "x.png", seed=3)
    from runkit.images import tensor_to_uint8

    assert np.array_equal(np.asarray(reconstruction), tensor_to_uint8(decoded)[0].numpy())


def test_searched_tokens_decode_closer_with_the_same_bits(pipe):
    from runkit.images import tensor_to_uint8

    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    x = pipe.image_tensor(image).float()
    encoder = pipe.tokenize(image)
    found = pipe.search_tokens(image, passes=1, seed=3, steps=2)
    searched = found.indices
    assert searched.shape == encoder.shape and searched.dtype == torch.int64
    assert not torch.equal(searched, encoder)
    assert int(found.flips.sum()) == sum(bin(int(a) ^ int(b)).count("1") for a, b in zip(searched[0], encoder[0]))

    def error(indices):
        return float((pipe.decode(indices, seed=3, steps=2) - x).square().mean())

    assert error(searched) < error(encoder)
    # The search decodes from the noise decode(seed=3) starts from, so it optimises the image decode shows.
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    direct = search_code(pipe.tokenizer, x, passes=1, noise=noise, steps=2)
    assert torch.equal(direct.indices, searched)
    assert float(direct.mse[0]) == pytest.approx(error(searched), rel=1e-5)
    reconstruction = pipe.reconstruct(image, seed=3, steps=2, search_passes=1)
    decoded = tensor_to_uint8(pipe.decode(searched, seed=3, steps=2))[0].numpy()
    assert np.array_equal(np.asarray(reconstruction), decoded)


def test_clear_errors(weights, pipe):
    with pytest.raises(NoMatchError, match="No class matches"):
        pipe("a submarine", num_images=1)
    with pytest.raises(ValueError, match="unknown class 'eleven'"):
        pipe(["eleven"])
    with pytest.raises(ValueError, match="num_images must be a positive integer"):
        pipe("a seven", num_images=0)
    with pytest.raises(ValueError, match="class id 10 is out of range"):
        pipe.generate([10])
    with pytest.raises(ValueError, match="this pipeline has no generator"):
        Pipeline(None, pipe.tokenizer)("a seven")
    other = make_demo_weights(weights.parent / "other_hash", tokenizer_hash="0000000000000000")
    with pytest.raises(ValueError, match="does not fit tokenizer"):
        Pipeline.from_pretrained(other / "ar", weights / "tokenizer")


def test_the_demo_generates_and_reconstructs_through_the_same_pipeline(weights, pipe, tmp_path):
    demo = DemoPipeline.load(weights_dir=weights, settings=DemoSettings(work_dir=str(tmp_path)))
    assert isinstance(demo.pipeline("MaskGIT"), Pipeline)
    shown = demo.generate(["seven", "three"], "MaskGIT", samples_per_class=2, steps=2, decode_steps=2, seed=9)
    direct = pipe.generate([7, 7, 3, 3], seed=9, num_steps=2, decode_steps=2)
    assert torch.equal(shown.indices, direct.indices) and torch.equal(shown.images, direct.images)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    result = demo.reconstruct(image, decode_steps=2, seed=2)
    assert torch.equal(result.indices, pipe.tokenize(image))
    assert torch.equal(result.reconstruction, pipe.decode(result.indices, seed=2, steps=2))
