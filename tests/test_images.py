"""Image decoding (formats, modes, bad files), crops, uint8 round trips and grids."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from runkit.images import (
    ImageDecodeError,
    load_image,
    make_grid_image,
    pil_to_tensor,
    save_comparison_grid,
    save_image_grid,
    tensor_to_uint8,
    uint8_to_tensor,
)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _rgb(width=24, height=16, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_decode_exactly(fmt):
    original = _rgb()
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    decoded = load_image(_encode(original, fmt, **kwargs))
    assert decoded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(original))


def test_jpeg_from_path(tmp_path):
    path = tmp_path / "a.jpg"
    _rgb().save(path, quality=95)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (24, 16)


def test_rgba_is_composited_on_white():
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[..., 0] = 200  # red channel
    pixels[:2, :, 3] = 0  # transparent top half
    pixels[2:, :, 3] = 255  # opaque bottom half
    img = load_image(_encode(Image.fromarray(pixels, "RGBA"), "PNG"))
    out = np.asarray(img)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[3, 3], [200, 0, 0])


def test_grayscale_and_la_modes():
    gray = Image.fromarray(np.full((5, 5), 77, dtype=np.uint8), "L")
    np.testing.assert_array_equal(np.asarray(load_image(_encode(gray, "PNG")))[0, 0], [77, 77, 77])
    la = Image.merge("LA", [gray, Image.new("L", (5, 5), 0)])
    np.testing.assert_array_equal(np.asarray(load_image(_encode(la, "PNG")))[0, 0], [255, 255, 255])


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 65535, 1000]], dtype=np.uint16)
    img16 = Image.fromarray(values)  # mode I;16
    decoded = np.asarray(load_image(_encode(img16, "PNG")))
    np.testing.assert_array_equal(decoded[0, :, 0], [0, 100, 255, 4])
    assert (decoded[..., 0] == decoded[..., 2]).all()


def test_float_image_in_unit_range():
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    np.testing.assert_array_equal(np.asarray(load_image(img))[0, :, 0], [0, 128, 255])


def test_cmyk_jpeg_and_palette_png():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    red = np.asarray(load_image(_encode(cmyk, "JPEG", quality=100)))
    assert red[4, 4, 0] > 240 and red[4, 4, 1] < 15 and red[4, 4, 2] < 15
    palette = _rgb().convert("P")
    img = load_image(_encode(palette, "PNG"))
    np.testing.assert_array_equal(np.asarray(img), np.asarray(palette.convert("RGB")))


def test_truncated_and_garbage_files_raise_decode_error(tmp_path):
    data = _encode(_rgb(64, 64), "JPEG")
    path = tmp_path / "broken.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        load_image(path)
    with pytest.raises(ImageDecodeError, match="not an image"):
        load_image(b"definitely not an image")
    with pytest.raises(ImageDecodeError, match="not found"):
        load_image(tmp_path / "missing.png")
    assert issubclass(ImageDecodeError, ValueError)


def test_max_pixels_guard_names_the_size():
    with pytest.raises(ImageDecodeError, match="24x16"):
        load_image(_encode(_rgb(), "PNG"), max_pixels=100)


def test_eval_transform_is_centre_crop_with_shortest_side_resize():
    img = _rgb(40, 20)
    tensor = pil_to_tensor(img, 10, train=False)
    assert tensor.shape == (3, 10, 10) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    resized = img.resize((20, 10), Image.Resampling.BICUBIC)
    expected = np.asarray(resized)[:, 5:15]
    np.testing.assert_array_equal(tensor_to_uint8(tensor).numpy(), expected)


def test_train_crop_randomness_comes_from_the_generator():
    img = _rgb(64, 16)
    crops = [pil_to_tensor(img, 16, True, torch.Generator().manual_seed(s)) for s in (1, 1, 2, 3, 4)]
    assert torch.equal(crops[0], crops[1])
    assert not all(torch.equal(crops[0], other) for other in crops[2:])
    torch.manual_seed(5)
    a = pil_to_tensor(img, 16, True)
    torch.manual_seed(5)
    assert torch.equal(a, pil_to_tensor(img, 16, True))


def test_uint8_round_trip_and_rounding():
    pixels = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    images = uint8_to_tensor(pixels)
    assert images.shape == (2, 3, 5, 6)
    assert torch.equal(tensor_to_uint8(images), pixels)
    out = tensor_to_uint8(torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5))
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError, match="uint8"):
        uint8_to_tensor(torch.zeros(2, 2, 3))


def test_grid_layout_labels_and_atomic_save(tmp_path):
    images = torch.stack([torch.full((3, 8, 8), v) for v in (-1.0, 1.0, -1.0)])
    grid = make_grid_image(images, nrow=2, padding=2)
    assert grid.size == (2 * 10 + 2, 2 * 10 + 2)
    pixels = np.asarray(grid)
    np.testing.assert_array_equal(pixels[2, 2], [0, 0, 0])
    np.testing.assert_array_equal(pixels[2, 12], [255, 255, 255])
    labelled = make_grid_image(images, nrow=2, labels=["zero", "one", "two"])
    assert labelled.size[1] > grid.size[1]
    with pytest.raises(ValueError, match="labels"):
        make_grid_image(images, labels=["a"])
    path = save_image_grid(images, tmp_path / "out" / "grid.png", nrow=3)
    assert Image.open(path).size == (3 * 10 + 2, 10 + 2)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


def test_comparison_grid_interleaves(tmp_path):
    originals = -torch.ones(2, 3, 8, 8)
    recons = torch.ones(2, 3, 8, 8)
    path = save_comparison_grid(originals, recons, tmp_path / "cmp.png", pairs_per_row=2)
    pixels = np.asarray(Image.open(path))
    assert pixels.shape[:2] == (12, 4 * 10 + 2)
    assert pixels[2, 2, 0] == 0 and pixels[2, 12, 0] == 255 and pixels[2, 22, 0] == 0
    with pytest.raises(ValueError, match="same shape"):
        save_comparison_grid(originals, recons[:1], tmp_path / "bad.png")


def test_load_image_accepts_uint8_arrays_and_rejects_other_arrays():
    import numpy as np

    from runkit.images import ImageDecodeError, load_image

    gray = np.full((5, 7), 200, dtype=np.uint8)
    assert load_image(gray).mode == "RGB" and load_image(gray).size == (7, 5)
    with pytest.raises(ImageDecodeError, match="not an image"):
        load_image(np.zeros((2, 3, 7), dtype=np.float64))
