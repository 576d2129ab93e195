"""Classic-codec baselines (bits counted, budgets kept, grey handling) and the rate–distortion benchmark."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer import FlowMo, FlowMoConfig
from tokenizer import classic_codecs as cc

SMALL = dict(image_size=32, patch_size=4, code_length=4, context_dim=12, lfq_bits=6, enc_width=0.5, dec_width=0.5,
             enc_depth=1, dec_depth=1, num_heads=3)


def textured(count: int, grey: bool, seed: int = 0, size: int = 32) -> np.ndarray:
    """(count, size, size, 3) uint8: smooth waves plus noise, grey replicated to RGB when ``grey``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        planes = [128 + 80 * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * x + rng.uniform(0.5, 3) * y))
                  + rng.normal(0, 20, (size, size)) for _ in range(1 if grey else 3)]
        image = np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)
        images.append(np.broadcast_to(image, (size, size, 3)))
    return np.stack(images)


# ------------------------------------------------------------------------------------ thumbnails
@pytest.mark.parametrize("grey", [True, False])
def test_constant_image_survives_every_thumbnail_candidate_within_budget(grey):
    images = np.full((2, 32, 32, 3), 137, dtype=np.uint8)
    candidates = cc.thumbnail_candidates(192, 32, grey)
    assert candidates
    for size, bits in candidates:
        assert cc.thumbnail_bits(size, bits, grey) <= 192
        recon = cc.thumbnail(images, size, bits, grey)
        # A constant stays constant; only the quantiser moves it, by at most half a level.
        assert np.abs(recon.astype(int) - 137).max() <= 0.5 * 255 / (2**bits - 1) + 0.5
        if bits == 8:
            np.testing.assert_array_equal(recon, images)


def test_thumbnail_candidates_for_a_known_budget():
    grey = cc.thumbnail_candidates(192, 32, grey=True)
    assert (8, 3) in grey
    assert grey == [(1, 8), (2, 8), (3, 8), (4, 8), (5, 7), (6, 5), (7, 3), (8, 3), (9, 2), (10, 1), (11, 1),
                    (12, 1), (13, 1)]  # 14x14 at 1 bit would be 196 bits
    colour = cc.thumbnail_candidates(192, 32, grey=False)
    assert colour == [(1, 8), (2, 8), (3, 7), (4, 4), (5, 2), (6, 1), (7, 1), (8, 1)]
    assert all(cc.thumbnail_bits(s, b, False) <= 192 and (b == 8 or cc.thumbnail_bits(s, b + 1, False) > 192)
               for s, b in colour)
    assert cc.thumbnail_candidates(2, 32, grey=False) == []


def test_quantiser_levels():
    values = np.arange(256)
    np.testing.assert_array_equal(cc.quantise(values, 8), values)
    assert set(cc.quantise(values, 1)) == {0.0, 255.0}
    assert len(set(cc.quantise(values, 3))) == 8


def test_best_thumbnail_is_the_best_candidate_and_fits():
    images = textured(4, grey=True)
    recon, choice = cc.best_thumbnail(images, 192, grey=True)
    assert (choice.size, choice.bits) in cc.thumbnail_candidates(192, 32, True)
    assert choice.total_bits == cc.thumbnail_bits(choice.size, choice.bits, True) <= 192
    np.testing.assert_array_equal(recon, cc.thumbnail(images, choice.size, choice.bits, True))
    with pytest.raises(ValueError, match="no thumbnail fits"):
        cc.best_thumbnail(images, 0, grey=True)


# ------------------------------------------------------------------------------------------ JPEG
@pytest.mark.parametrize("grey", [True, False])
def test_jpeg_scan_bits_are_the_bytes_between_sos_header_and_eoi(grey):
    img = cc.to_pil(textured(1, grey)[0], grey)
    data = cc.encode_jpeg(img, 95)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    # A single baseline scan: the last SOS marker (a scan cannot contain one) ends the headers.
    sos = data.rfind(b"\xff\xda")
    scan_start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    assert b"\xff\x00" in data[scan_start:-2]  # stuffed bytes belong to the scan
    assert cc.jpeg_scan_bytes(data) == len(data) - scan_start - 2
    assert cc.jpeg_scan_bits(img, 95) == 8 * (len(data) - scan_start - 2)
    assert cc.jpeg_header_bytes(img, 95) == scan_start + 2


def test_jpeg_parser_rejects_other_data():
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    with pytest.raises(ValueError, match="SOI"):
        cc.jpeg_scan_bytes(buffer.getvalue())
    with pytest.raises(ValueError):
        cc.jpeg_scan_bytes(cc.encode_jpeg(Image.new("L", (8, 8)), 50)[:-10])


def test_jpeg_picks_the_highest_quality_that_fits():
    # Scan size is not monotone in quality, so every higher quality must be checked to be over budget.
    images = textured(3, grey=True)
    budget = int(np.median([cc.jpeg_scan_bits(cc.to_pil(image, True), 40) for image in images]))
    result = cc.jpeg_at_budget(images, budget, grey=True)
    for image, quality, bits, fits in zip(images, result.qualities, result.bits, result.fits):
        img = cc.to_pil(image, True)
        assert bits == cc.jpeg_scan_bits(img, int(quality))
        assert fits == (bits <= budget)
        assert all(cc.jpeg_scan_bits(img, q) > budget for q in range(int(quality) + 1, 101))
    assert result.fits.any()


def test_a_budget_below_any_jpeg_scan_fits_no_image():
    images = textured(3, grey=False)
    result = cc.jpeg_at_budget(images, 8, grey=False)
    assert not result.fits.any() and (result.qualities == 1).all() and (result.bits > 8).all()
    expected = np.asarray(Image.open(io.BytesIO(cc.encode_jpeg(cc.to_pil(images[0], False), 1))).convert("RGB"))
    np.testing.assert_array_equal(result.recon[0], expected)


# ------------------------------------------------------------------------------------------ WebP
webp = pytest.mark.skipif(not cc.WEBP_AVAILABLE, reason="Pillow built without WebP")


@webp
def test_webp_counts_the_vp8_payload_without_container_and_frame_header():
    img = cc.to_pil(textured(1, grey=False)[0], False)
    data = cc.encode_webp(img, 50)
    assert data[12:16] == b"VP8 "
    chunk = int.from_bytes(data[16:20], "little")
    assert len(data) == 20 + chunk + (chunk & 1)
    assert cc.webp_vp8_payload_bytes(data) == chunk - 10
    assert cc.webp_payload_bits(img, 50) == 8 * (chunk - 10)
    buffer = io.BytesIO()
    img.save(buffer, format="WEBP", lossless=True)
    with pytest.raises(ValueError, match="VP8L"):
        cc.webp_vp8_payload_bytes(buffer.getvalue())


@webp
def test_webp_budget_search():
    images = textured(2, grey=False)
    assert not cc.webp_at_budget(images, 8, grey=False).fits.any()
    result = cc.webp_at_budget(images, 4000, grey=False)
    assert result.fits.all() and (result.bits <= 4000).all()
    for image, quality, bits in zip(images, result.qualities, result.bits):
        assert bits == cc.webp_payload_bits(cc.to_pil(image, False), int(quality))


# ------------------------------------------------------------------------------------------ grey
def test_grey_in_grey_out_and_grey_is_checked():
    images = textured(2, grey=True)
    assert cc.is_grey(images) and not cc.is_grey(textured(1, grey=False))
    outputs = [cc.thumbnail(images, 8, 3, True), cc.jpeg_at_budget(images, 400, True).recon]
    if cc.WEBP_AVAILABLE:
        outputs.append(cc.webp_at_budget(images, 800, True).recon)
    for recon in outputs:
        assert recon.shape == images.shape and recon.dtype == np.uint8 and cc.is_grey(recon)
    with pytest.raises(ValueError, match="grey"):
        cc.thumbnail(textured(1, grey=False), 8, 3, grey=True)


# ------------------------------------------------------------------------------------- benchmark
@pytest.fixture(scope="module")
def rate_distortion(benchmark_module):
    return benchmark_module("rate_distortion")


def test_grid_takes_every_class_in_turn(rate_distortion):
    assert rate_distortion.grid_indices([0, 0, 0, 1, 1, 2], 4) == [0, 3, 5, 1]
    assert rate_distortion.grid_indices(list(range(10)), 3) == [0, 4, 9]


def test_decoder_rows_count_guidance_twice(rate_distortion):
    torch.manual_seed(0)
    model = FlowMo(FlowMoConfig(**SMALL)).eval()
    code = model.indices_to_code(torch.zeros(2, model.config.num_indices, dtype=torch.long))
    with torch.no_grad(), rate_distortion.count_decoder_rows(model) as rows:
        model.decode(code, steps=3, cfg=2.0, cfg_interval=None)
    assert rows[0] == 2 * 3 * 2
    assert "velocity_from_input" not in vars(model)  # the wrapper is gone afterwards


def test_benchmark_writes_results_and_pictures(rate_distortion, tmp_path, capsys):
    torch.manual_seed(0)
    FlowMo(FlowMoConfig(**SMALL)).save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    results = rate_distortion.main(["--checkpoint", str(tmp_path / "model"), "--data", "digits", "--num-images", "8",
                                    "--batch-size", "4", "--out-dir", str(out), "--device", "cpu",
                                    "--search-passes", "1"], sweep=((1, 1.0), (4, 1.5)))
    written = json.loads((out / "results.json").read_text())
    assert written["bits_per_image"] == 4 * 12 and written["num_images"] == 8 and written["grey"] is True
    assert [row["setting"] for row in written["tokenizer"][1:-1]] == ["steps 1, cfg 1.0", "steps 4, cfg 1.5"]
    # Code search: the same bits and decoder settings as the default row, at least as close to the images.
    default, searched = written["tokenizer"][0], written["tokenizer"][-1]
    assert searched["method"] == "FlowMo + code search" and searched["search_passes"] == 1
    assert (searched["steps"], searched["cfg"], searched["budget_bits"]) == (default["steps"], default["cfg"], 48)
    assert searched["psnr"] >= default["psnr"] - 0.01 and 0 < searched["bits_changed_mean"] <= 48
    assert searched["setting"] == f"steps {default['steps']}, cfg {default['cfg']}, 1 search pass"
    assert any(verdict.startswith(f"FlowMo + code search ({searched['setting']})") for verdict in written["verdicts"])
    assert written["tokenizer"][1]["nfe_per_image"] == 1.0 and written["tokenizer"][2]["nfe_per_image"] >= 4.0
    assert {row["method"] for row in written["codecs"]} >= {"thumbnail", "JPEG"}
    assert {row["budget_bits"] for row in written["codecs"]} == {12, 24, 48, 96, 192}
    assert all(row["bits_mean"] <= row["budget_bits"] for row in written["codecs"] if row["method"] == "thumbnail")
    assert written["best_codec_at_equal_bits"]["over_budget"] == 0
    for name in ("rate_distortion.png", "comparison.png"):
        assert Image.open(out / name).size[0] > 100
    printed = capsys.readouterr().out
    assert "JPEG: entropy-coded scan bytes only" in printed and "held-out images" in printed
    assert results["codecs"] == written["codecs"]
