"""Code search (encoding by decoding candidates): the error never rises, the code stays a valid code,
the search is repeatable, and bad input is refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tokenizer import FlowMo, FlowMoConfig, search_code, search_evaluations
from tokenizer.code_search import reconstruction_mse

DECODE = {"steps": 1, "cfg": 1.0}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # The test size with a short code (4 tokens x 6 bits), so a pass is 24 decodes.
    config = dataclasses.replace(FlowMoConfig.preset("tiny"), code_length=4, context_dim=6, lfq_bits=6)
    return FlowMo(config).eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    coarse = torch.rand(3, 3, 4, 4) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def noise(images):
    return torch.randn(images.shape, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def searched(model, images, noise):
    return search_code(model, images, passes=1, noise=noise, **DECODE)


def test_search_lowers_the_error_and_never_raises_it(model, images, noise, searched):
    assert (searched.mse <= searched.start_mse).all()
    assert (searched.mse < searched.start_mse).any()
    assert (searched.flips > 0).any()
    # The reported errors are the decoder's, with the same noise.
    encoder_code = model.quantize(model.encode(images)).code
    torch.testing.assert_close(searched.start_mse, reconstruction_mse(model, encoder_code, images, noise, DECODE))
    torch.testing.assert_close(searched.mse, reconstruction_mse(model, searched.code, images, noise, DECODE))


def test_searched_code_is_a_valid_code_of_the_same_size(model, images, searched):
    encoder_code = model.quantize(model.encode(images)).code
    assert searched.code.shape == encoder_code.shape
    assert bool(((searched.code == 1) | (searched.code == -1)).all())
    torch.testing.assert_close(model.indices_to_code(searched.indices), searched.code)
    assert torch.equal(searched.flips, (searched.code != encoder_code).flatten(1).sum(1))


def test_zero_passes_is_the_encoder(model, images, noise):
    result = search_code(model, images, passes=0, noise=noise, **DECODE)
    assert torch.equal(result.indices, model.tokenize(images))
    assert torch.equal(result.mse, result.start_mse)
    assert result.passes == 0 and int(result.flips.sum()) == 0


def test_search_is_repeatable_and_starts_from_a_given_code(model, images, noise, searched):
    again = search_code(model, images, passes=1, noise=noise, **DECODE)
    assert torch.equal(again.indices, searched.indices)
    # Starting from the searched code, a pass can only keep or lower its error.
    further = search_code(model, images, passes=1, code=searched.code, noise=noise, **DECODE)
    assert (further.mse <= searched.mse).all()
    torch.testing.assert_close(further.start_mse, searched.mse)


def test_progress_reaches_the_total(model, images, noise):
    calls = []
    search_code(model, images[:1], passes=1, noise=noise[:1], progress=lambda done, total: calls.append((done, total)),
                **DECODE)
    bits = model.config.bits_per_image
    assert calls[-1] == (bits, bits)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_search_cost_counts_a_decode_per_bit_and_pass(model):
    assert model.config.bits_per_image == 4 * 6
    assert search_evaluations(model, 3, **DECODE) == 3 * 24 * 1
    assert search_evaluations(model, 1, steps=4, cfg=1.5, cfg_interval=None) == 24 * 4 * 2  # guided: 2 per step


def test_search_stops_after_a_pass_that_keeps_nothing(model, images, noise):
    calls = []
    result = search_code(model, images, passes=50, noise=noise, progress=lambda done, total: calls.append(done),
                         **DECODE)
    assert 1 < result.passes < 50  # 24 bits: a local optimum long before 50 passes
    assert calls[-1] == 50 * 24 and calls[-2] == result.passes * 24
    again = search_code(model, images, passes=1, code=result.code, noise=noise, **DECODE)
    assert again.passes == 1 and int(again.flips.sum()) == 0 and torch.equal(again.mse, result.mse)


def test_noise_from_a_generator_is_drawn_once(model, images):
    drawn = torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    from_generator = search_code(model, images, passes=1, generator=torch.Generator().manual_seed(5), **DECODE)
    given = search_code(model, images, passes=1, noise=drawn, **DECODE)
    assert torch.equal(from_generator.indices, given.indices) and torch.equal(from_generator.mse, given.mse)


@pytest.mark.parametrize("kwargs, message", [
    ({"passes": -1}, "passes must be an integer >= 0"),
    ({"passes": 1.5}, "passes must be an integer >= 0"),
    ({"passes": True}, "passes must be an integer >= 0"),
    ({"code": torch.ones(3, 4, 6, dtype=torch.long)}, "floating point"),
    ({"noise": torch.zeros(1, 3, 32, 32)}, "noise must have the images' shape"),
    ({"code": torch.full((3, 4, 6), 0.5)}, "every entry -1 or \\+1"),
    ({"code": torch.ones(2, 4, 6)}, "code has 2 rows for 3 images"),
])
def test_bad_arguments_are_refused(model, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        search_code(model, images, **kwargs, **DECODE)


def test_images_of_the_wrong_size_are_refused(model):
    with pytest.raises(ValueError, match="32x32"):
        search_code(model, torch.zeros(1, 3, 16, 16), **DECODE)


def test_per_pass_benchmark_writes_results_and_plot(benchmark_module, tmp_path):
    import json

    code_search = benchmark_module("code_search")
    # 192 bits: JPEG's scan bytes fit the digits, so both sets are scored.
    config = dataclasses.replace(FlowMoConfig.preset("tiny"), code_length=8, context_dim=24, lfq_bits=8,
                                 enc_depth=1, dec_depth=1)
    config.decode.steps, config.decode.cfg = 1, 1.0
    torch.manual_seed(0)
    FlowMo(config).save_pretrained(tmp_path / "model")
    results = code_search.main(["--checkpoint", str(tmp_path / "model"), "--data", "digits", "--num-images", "3",
                                "--passes", "2", "--batch-size", "4", "--out-dir", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == json.loads(json.dumps(results))
    rows = results["passes"]
    assert [row["pass"] for row in rows] == [0, 1, 2] and rows[1]["bits_flipped"] > 0
    # Each pass can only lower the float error; scored as uint8 the PSNR may move by rounding only.
    assert rows[2]["all"]["psnr"] >= rows[1]["all"]["psnr"] - 0.05 >= rows[0]["all"]["psnr"] - 0.1
    assert rows[2]["all"]["psnr"] > rows[0]["all"]["psnr"]
    fitting = results["jpeg_on_fitting_images"]
    assert 0 < fitting["count"] <= 3 and fitting["psnr"] > 0 and rows[2]["fitting"]["psnr"] > 0
    assert (tmp_path / "out" / "code_search.png").stat().st_size > 1000
