"""The running demo driven through gradio_client: every tab's main action, errors, concurrency;
and the built page's widgets (tokenizer choice, slider defaults)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from app.limits import DemoLimits
from app.models import EXAMPLES_DIR
from app.pipeline import DemoPipeline
from app.settings import DemoSettings

from app_helpers import DIGIT_NAMES, MAIN_DECODE, PHOTO_DECODE, free_port, make_demo_weights

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, client) of a demo over tiny random models, served on a free local port."""
    from app.ui import SamplingDefaults, build_demo, launch

    weights = make_demo_weights(tmp_path_factory.mktemp("ui_weights"), photo=True)
    # Evaluate uses the digits default reference (the val split), capped to keep Inception on CPU short.
    settings = DemoSettings(limits=DemoLimits(max_batch=8, max_decode_steps=20), eval_max_reference_images=40,
                            work_dir=str(tmp_path_factory.mktemp("ui_work")), model_dirs=(str(weights),))
    pipeline = DemoPipeline.load(weights_dir=weights, settings=settings)
    demo = build_demo(pipeline, SamplingDefaults(decode_steps=2, generator_steps=2), model_picker=True)
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


def _component(demo, kind: type, label: str):
    """The one component of this type and label in a built (not served) demo."""
    found = [block for block in demo.blocks.values() if isinstance(block, kind) and block.label == label]
    assert len(found) == 1, f"{len(found)} {kind.__name__} components labelled {label!r}"
    return found[0]


def _gallery_names(gallery: list[dict]) -> list[str]:
    """File names of a gallery value: FileData dicts in a built demo, downloaded paths from the client."""
    return [item["image"]["orig_name"] if isinstance(item["image"], dict) else Path(item["image"]).name
            for item in gallery]


def test_every_event_has_an_api_name(served):
    _, client = served
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/reconstruct", "/edit_tokens", "/evaluate", "/match_prompt", "/load_models",
            "/status", "/select_tokenizer", "/select_domain"} <= endpoints


def test_generate_returns_images_tokens_and_info(served):
    _, client = served
    grid, tokens, _files, info = client.predict(["three", "seven"], "MaskGIT", 2, 2, 2.0, 1.0, 0, 2, 1.5,
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
    # The tokenizer argument is left out: the main tokenizer, as before there was a choice.
    comparison, tokens, table = client.predict(gradio_client.handle_file(str(EXAMPLES_DIR / "digit_7.png")),
                                               2, 1.5, 0, api_name="/reconstruct")
    pixels = _assert_picture(comparison)
    assert pixels.shape[1] > pixels.shape[0]  # original | reconstruction side by side
    _assert_picture(tokens)
    rows = _rows(table)
    assert float(rows["PSNR (dB)"]) > 0 and rows["BPP"] == "0.1875" and rows["bits used"] == "192"
    assert rows["LPIPS"].startswith("unavailable") and rows["tokenizer"] == "Digits tokenizer"
    assert float(rows["decode time (ms)"]) >= 0 and rows["decoder"].startswith("2 steps, CFG 1.5, ")
    assert rows["token search"].startswith("1 pass, ")  # the slider's default (sampling.search_passes)


def test_reconstruct_with_the_photo_tokenizer(served):
    _, client = served
    _, _, table = client.predict(gradio_client.handle_file(str(EXAMPLES_DIR / "photo_fruits.png")), 2, 1.0, 0,
                                 "photos", api_name="/reconstruct")
    rows = _rows(table)
    assert rows["tokenizer"] == "Photo tokenizer" and rows["BPP"] == "0.7500"  # 192 bits over 16 x 16 px
    with pytest.raises(gradio_client.exceptions.AppError, match="not in the list of choices"):
        client.predict(gradio_client.handle_file(str(EXAMPLES_DIR / "digit_7.png")), 2, 1.0, 0, "faces",
                       api_name="/reconstruct")


def test_switching_tokenizer_switches_examples_hint_and_decoder_defaults(served):
    _, client = served
    # The served demo sets sampling.decode_steps=2 (an explicit number wins); decode_cfg is null.
    hint, gallery, steps, cfg, search = client.predict("photos", api_name="/select_tokenizer")
    names = _gallery_names(gallery)
    assert 4 <= len(names) <= 6 and all(name.startswith("photo_") for name in names)
    assert "photo" in hint and (steps, cfg) == (2, PHOTO_DECODE["cfg"]) and search == 1
    hint, gallery, steps, cfg, search = client.predict("digits", api_name="/select_tokenizer")
    assert _gallery_names(gallery) == ["digit_3.png", "digit_7.png"]
    assert "digit" in hint and (steps, cfg) == (2, MAIN_DECODE["cfg"])


def test_edit_tokens_swap(served):
    _, client = served
    a = gradio_client.handle_file(str(EXAMPLES_DIR / "digit_3.png"))
    b = gradio_client.handle_file(str(EXAMPLES_DIR / "digit_7.png"))
    grid, tokens = client.predict(a, b, "swap", 0, 16, 0.25, 0.5, 0, 2, 1.5, api_name="/edit_tokens")
    pixels = _assert_picture(grid)
    assert pixels.shape[1] > 3 * pixels.shape[0]  # four cells in one row
    _assert_picture(tokens)


@pytest.mark.slow
def test_evaluate_reports_classifier_metrics_and_memorization(served):
    _, client = served
    table, plot, grid, summary = client.predict(10, "MaskGIT", 2, 2.0, 1.0, 2, 1.5, 0, api_name="/evaluate")
    rows = _rows(table)
    # Digits models are scored in the shipped digits classifier's features: real numbers, named for it.
    fid = rows["gFID (digits classifier features)"]
    assert "UNCALIBRATED" not in fid and float(fid.split()[0]) >= 0
    assert "real data" in rows["near-duplicate rate"] and float(rows["exact copies of training tokens"]) >= 0
    assert "UNCALIBRATED" not in summary
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
    assert "10 classes" in client.predict(api_name="/status") and "Photo tokenizer" in client.predict(
        api_name="/status")
    with pytest.raises(gradio_client.exceptions.AppError, match="only loads checkpoints under"):
        client.predict(str(tmp_path / "nothing"), "", "", "", api_name="/load_models")


# ---------------------------------------------------------------------------- built, not served
@pytest.mark.parametrize("photo", [False, True])
def test_tokenizer_choice_lists_the_photo_tokenizer_only_when_loaded(tmp_path, photo):
    from app.ui import build_demo

    pipeline = DemoPipeline.load(weights_dir=make_demo_weights(tmp_path, photo=photo))
    demo = build_demo(pipeline)
    radio = _component(demo, gr.Radio, "Tokenizer")
    gallery = _component(demo, gr.Gallery, "Examples (click one)")
    expected = [("Digits tokenizer", "digits")] + ([("Photo tokenizer", "photos")] if photo else [])
    assert radio.choices == expected and radio.value == "digits"
    assert radio.visible is photo  # one tokenizer: nothing to choose
    assert _gallery_names(gallery.value) == ["digit_3.png", "digit_7.png"]  # the main tokenizer's domain


def test_decoder_sliders_default_to_the_tokenizer_config(tmp_path):
    from app.ui import SamplingDefaults, build_demo

    pipeline = DemoPipeline.load(weights_dir=make_demo_weights(tmp_path))
    sliders = build_demo(pipeline, SamplingDefaults()).blocks.values()
    steps = [b.value for b in sliders if isinstance(b, gr.Slider) and b.label == "Decoder steps"]
    cfgs = [b.value for b in sliders if isinstance(b, gr.Slider) and b.label == "Decoder CFG"]
    assert steps == [MAIN_DECODE["steps"]] * 4 and cfgs == [MAIN_DECODE["cfg"]] * 4  # all four tabs
    sliders = build_demo(pipeline, SamplingDefaults(decode_steps=7, decode_cfg=0.5)).blocks.values()
    values = {b.value for b in sliders if isinstance(b, gr.Slider) and b.label.startswith("Decoder")}
    assert values == {7, 0.5}  # explicit numbers override


def test_picking_a_gallery_example_fills_the_image_input(tmp_path, monkeypatch):
    """The gallery hands app/examples files to the File input: allowed however the server was started."""
    import asyncio

    from app.ui import build_demo, launch

    pipeline = DemoPipeline.load(weights_dir=make_demo_weights(tmp_path / "weights", photo=True))
    demo = build_demo(pipeline)
    monkeypatch.chdir(tmp_path)  # app/examples is outside the working directory
    launch(demo, port=free_port(), block=False)
    try:
        pick = next(fn for fn in demo.fns.values() if fn.name == "pick_example")
        event = gr.EventData(None, {"index": 2, "value": None})
        picked = asyncio.run(demo.process_api(block_fn=pick, inputs=["photos"], event_data=event))["data"][0]
    finally:
        demo.close()
    assert picked["orig_name"] == Path(pipeline.tokenizer_choice("photos").examples[2]).name


def test_token_search_default_is_off_where_one_pass_passes_the_limit():
    from app.models import TokenizerChoice
    from app.ui import SamplingDefaults

    def choice(search_cost):
        return TokenizerChoice("t", "T", "", [], 1, 1.0, 16, search_cost=search_cost)

    defaults = SamplingDefaults(search_passes=2)
    assert defaults.search(choice(192 * 4), 10_000) == 2
    assert defaults.search(choice(4608 * 50), 10_000) == 0  # a released FlowMo-Lo at its 25-step guided decode
    assert SamplingDefaults(search_passes=0).search(choice(192), 10_000) == 0
