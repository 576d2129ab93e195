"""The running demo driven through gradio_client: every tab's main action, errors, concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.limits import DemoLimits
from app.pipeline import EXAMPLES_DIR, DemoPipeline, DemoSettings

from app_helpers import DIGIT_NAMES, free_port, make_demo_weights

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, client) of a demo over tiny random models, served on a free local port."""
    from app.ui import SamplingDefaults, build_demo, launch

    weights = make_demo_weights(tmp_path_factory.mktemp("ui_weights"))
    # Evaluate uses the digits default reference (the val split), capped to keep Inception on CPU short.
    settings = DemoSettings(limits=DemoLimits(max_batch=8, max_decode_steps=20), eval_max_reference_images=40,
                            work_dir=str(tmp_path_factory.mktemp("ui_work")))
    pipeline = DemoPipeline.load(weights_dir=weights, settings=settings)
    demo = build_demo(pipeline, SamplingDefaults(decode_steps=2, generator_steps=2))
    url = launch(demo, port=free_port(), concurrency=2, block=False)
    client = gradio_client.Client(url, verbose=False)
    yield url, client
    client.close()
    demo.close()


def _image(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def _assert_picture(path: str, min_size: int = 32) -> np.ndarray:
    pixels = _image(path)
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert min(pixels.shape[:2]) >= min_size
    assert pixels.std() > 1.0, "image is blank"
    return pixels


def _rows(table) -> dict[str, str]:
    return {row[0]: row[1] for row in table["data"]}


def test_every_event_has_an_api_name(served):
    _, client = served
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/reconstruct", "/edit_tokens", "/evaluate", "/match_prompt", "/load_models",
            "/status"} <= endpoints


def test_generate_returns_images_tokens_and_info(served):
    _, client = served
    grid, tokens, info = client.predict(["three", "seven"], "MaskGIT", 2, 2, 2.0, 1.0, 0, 2, 1.5,
                                        api_name="/generate")
    pixels = _assert_picture(grid)
    assert pixels.shape[0] > 2 * 128 and pixels.shape[1] > 2 * 128  # 2 x 2 cells, each shown >= 128 px
    _assert_picture(tokens)
    assert "4 images" in info and "MaskGIT" in info


def test_prompt_box_selects_the_best_match(served):
    _, client = served
    selected, table = client.predict("a seven", api_name="/match_prompt")
    assert selected == ["seven"]
    assert table["data"][0][0] == "seven" and int(table["data"][0][1]) == 7


def test_reconstruct_upload_shows_metrics(served):
    _, client = served
    comparison, tokens, table = client.predict(gradio_client.handle_file(str(EXAMPLES_DIR / "chelsea_cat.png")),
                                               2, 1.5, 0, api_name="/reconstruct")
    pixels = _assert_picture(comparison)
    assert pixels.shape[1] > pixels.shape[0]  # original | reconstruction side by side
    _assert_picture(tokens)
    rows = _rows(table)
    assert float(rows["PSNR (dB)"]) > 0 and rows["BPP"] == "0.1875" and rows["bits used"] == "192"
    assert rows["LPIPS"].startswith("unavailable")


def test_edit_tokens_swap(served):
    _, client = served
    a = gradio_client.handle_file(str(EXAMPLES_DIR / "digit_3.png"))
    b = gradio_client.handle_file(str(EXAMPLES_DIR / "digit_7.png"))
    grid, tokens = client.predict(a, b, "swap", 0, 16, 0.25, 0.5, 0, 2, 1.5, api_name="/edit_tokens")
    pixels = _assert_picture(grid)
    assert pixels.shape[1] > 3 * pixels.shape[0]  # four cells in one row
    _assert_picture(tokens)


@pytest.mark.slow
def test_evaluate_reports_uncalibrated_metrics(served):
    _, client = served
    table, plot, grid, summary = client.predict(10, "MaskGIT", 2, 2.0, 1.0, 2, 1.5, 0, api_name="/evaluate")
    rows = _rows(table)
    assert "UNCALIBRATED" in rows["gFID"] and float(rows["gFID"].split()[0]) >= 0
    assert "UNCALIBRATED" in summary
    _assert_picture(plot)
    _assert_picture(grid)


@pytest.mark.parametrize("arguments, message", [
    (([], "MaskGIT", 1, 2, 2.0, 1.0, 0, 2, 1.5), "select at least one class"),
    ((["one"], "MaskGIT", 1, 5000, 2.0, 1.0, 0, 2, 1.5), "greater than maximum value 64"),
    ((["one", "two"], "MaskGIT", 5, 2, 2.0, 1.0, 0, 2, 1.5), "at most 8 per request"),
    ((["one"], "MaskGIT", 1, 2, 2.0, 0.0, 0, 2, 1.5), "less than minimum value|temperature must be in"),
])
def test_generate_bad_input_is_a_message(served, arguments, message):
    _, client = served
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(*arguments, api_name="/generate")


def test_non_image_uploads_are_messages(served, tmp_path):
    _, client = served
    fake_png = tmp_path / "fake.png"
    fake_png.write_bytes(b"\x00definitely not a PNG")
    with pytest.raises(gradio_client.exceptions.AppError, match="fake.png"):
        client.predict(gradio_client.handle_file(str(fake_png)), 2, 1.5, 0, api_name="/reconstruct")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(gradio_client.exceptions.AppError, match="(?i)invalid file type"):
        client.predict(gradio_client.handle_file(str(text)), 2, 1.5, 0, api_name="/reconstruct")


def test_ten_concurrent_generate_requests_all_succeed(served):
    url, _ = served

    def one(seed: int) -> str:
        client = gradio_client.Client(url, verbose=False)
        try:
            return client.predict([DIGIT_NAMES[seed % 10]], "MaskGIT", 1, 2, 2.0, 1.0, seed, 2, 1.5,
                                  api_name="/generate")[0]
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        paths = list(pool.map(one, range(10)))
    assert len(paths) == 10
    for path in paths:
        _assert_picture(path)
    assert len({Path(p).read_bytes() for p in paths}) > 1  # different seeds, different images


def test_status_and_model_picker(served, tmp_path):
    _, client = served
    assert "10 classes" in client.predict(api_name="/status")
    with pytest.raises(gradio_client.exceptions.AppError, match="not found"):
        client.predict(str(tmp_path / "nothing"), "", "", "", api_name="/load_models")
