"""The image file / tensor boundary: decoding any common file to RGB, crops, uint8 and PNG grids.

Inside the project images are float tensors in [-1, 1]; uint8 HWC appears only here, where
files are read or written and where the UI hands pictures over.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .fileio import atomic_write

__all__ = [
    "ImageDecodeError",
    "load_image",
    "pil_to_tensor",
    "tensor_to_uint8",
    "uint8_to_tensor",
    "make_grid_image",
    "save_image_grid",
    "save_comparison_grid",
]

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image
# Set in ``info`` of an image whose (partly) transparent pixels load_image put on white, so a UI can say so.
FLATTENED_ON_WHITE = "flattened_on_white"

# Modes whose pixels are 16-bit unsigned integers; "I" is where Pillow puts 16-bit PNG
# greyscale on some versions, so it is read as 16-bit too (see _high_bit_depth_to_uint8).
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageDecodeError(ValueError):
    """A file that is not a readable image (truncated, corrupt, unknown format, too large)."""


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    return f"<{len(source)} bytes>"


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(background, rgba).convert("RGB")
    if rgba.getchannel("A").getextrema()[0] < 255:
        flat.info[FLATTENED_ON_WHITE] = True
    return flat


def _high_bit_depth_to_uint8(img: Image.Image) -> Image.Image:
    """16-bit and float greyscale to 8-bit RGB by scaling the full range (never by clipping).

    Integer modes are read as 0..65535 (scaled by 255/65535). Float ("F") images are read
    as 0..1 when their maximum is at most 1, else 0..255, else 0..65535.
    """
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        peak = float(values.max()) if values.size else 0.0
        full_scale = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
    else:
        full_scale = 65535.0
    gray = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        return _composite_on_white(img)
    if img.mode == "P":
        if "transparency" in img.info:
            return _composite_on_white(img)
        return img.convert("RGB")
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        return _high_bit_depth_to_uint8(img)
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow's conversions are exact or the standard ones.
    return img.convert("RGB")


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = None,
    exif_transpose: bool = False,
    name: str | None = None,
) -> Image.Image:
    """Decode ``source`` (path, encoded bytes or a PIL image) to an 8-bit RGB PIL image.

    Greyscale, palette, CMYK, 16-bit and float images are converted; transparency is
    composited on white. Multi-frame files give their first frame. ``max_pixels`` rejects
    larger images before decoding (decompression bombs). ``exif_transpose`` applies the
    EXIF orientation (off by default: dataset statistics such as FID references ignore it).
    ``name`` labels the source in error messages (default: the path, or the byte count).

    Raises:
        ImageDecodeError: the source is missing, unreadable, truncated or too large.
    """
    name = name or _describe(source)
    try:
        if isinstance(source, Image.Image):
            img = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            img = Image.open(io.BytesIO(bytes(source)))
        elif isinstance(source, (str, os.PathLike)):
            img = Image.open(Path(source))
        elif isinstance(source, np.ndarray):
            try:
                img = Image.fromarray(source)
            except TypeError as error:
                raise ImageDecodeError(f"{name}: an array of shape {source.shape} and dtype {source.dtype} "
                                       "is not an image (expected uint8 H x W or H x W x 3/4)") from error
        else:
            raise TypeError(
                f"load_image takes a path, bytes, a uint8 array or a PIL.Image, got {type(source).__name__}"
            )
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageDecodeError(
                f"{name}: image is {width}x{height} = {width * height} pixels, "
                f"more than max_pixels={max_pixels}"
            )
        img.load()
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except ImageDecodeError:
        raise
    except FileNotFoundError as error:
        raise ImageDecodeError(f"{name}: file not found") from error
    except UnidentifiedImageError as error:
        raise ImageDecodeError(f"{name}: not an image format Pillow can read") from error
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"{name}: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageDecodeError(f"{name}: cannot decode image ({error})") from error


def _resize_shortest_side(img: Image.Image, size: int) -> Image.Image:
    width, height = img.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new_size == (width, height):
        return img
    # PIL's bicubic filter widens its support when shrinking, i.e. it is antialiased.
    return img.resize(new_size, Image.Resampling.BICUBIC)


def pil_to_tensor(
    img: Image.Image,
    image_size: int,
    train: bool,
    generator: torch.Generator | None = None,
    *,
    hflip: bool = False,
) -> torch.Tensor:
    """Resize the shortest side to ``image_size`` (bicubic, antialiased), then crop a square.

    ``train`` picks a random crop (and a random horizontal flip when ``hflip``), else the
    centre crop. Randomness comes only from ``generator`` or, when it is None, the torch
    global RNG, so a checkpointed RNG state reproduces the same crops.

    Returns:
        (3, image_size, image_size) float32 tensor in [-1, 1].
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    img = _resize_shortest_side(_to_rgb(img), image_size)
    width, height = img.size
    if train:
        top = int(torch.randint(0, height - image_size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - image_size + 1, (1,), generator=generator))
    else:
        top = int(round((height - image_size) / 2.0))
        left = int(round((width - image_size) / 2.0))
    img = img.crop((left, top, left + image_size, top + image_size))
    pixels = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
    tensor = uint8_to_tensor(pixels)
    if train and hflip and bool(torch.rand((), generator=generator) < 0.5):
        tensor = tensor.flip(-1)
    return tensor


def tensor_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) or (3,H,W) float in [-1,1] -> uint8 (B,H,W,3) or (H,W,3), round((x+1)*127.5)."""
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"expected (B,3,H,W) or (3,H,W) images, got shape {tuple(images.shape)}")
    pixels = ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.movedim(-3, -1).contiguous().cpu()


def uint8_to_tensor(pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (B,H,W,3) or (H,W,3) -> float32 (B,3,H,W) or (3,H,W) in [-1, 1]."""
    pixels = torch.as_tensor(pixels)
    if pixels.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got dtype {pixels.dtype}")
    if pixels.dim() not in (3, 4) or pixels.shape[-1] != 3:
        raise ValueError(f"expected (B,H,W,3) or (H,W,3) pixels, got shape {tuple(pixels.shape)}")
    return pixels.movedim(-1, -3).float().div(127.5).sub(1.0).contiguous()


def _label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def make_grid_image(
    images: torch.Tensor,
    nrow: int = 8,
    labels: Sequence[str] | None = None,
    padding: int = 2,
) -> Image.Image:
    """Tile (B,3,H,W) images in [-1,1] into one RGB picture, ``nrow`` images per row.

    ``labels`` (one string per image) are written under each cell in Pillow's default font.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B,3,H,W) images, got shape {tuple(images.shape)}")
    count, _, height, width = images.shape
    if count == 0:
        raise ValueError("make_grid_image needs at least one image")
    if nrow <= 0:
        raise ValueError(f"nrow must be positive, got {nrow}")
    if labels is not None and len(labels) != count:
        raise ValueError(f"got {len(labels)} labels for {count} images")
    font = _label_font()
    label_height = 0
    if labels is not None:
        label_height = max(font.getbbox(text or " ")[3] for text in labels) + 4
    columns = min(nrow, count)
    rows = (count + columns - 1) // columns
    cell_w, cell_h = width + padding, height + label_height + padding
    canvas = Image.new("RGB", (columns * cell_w + padding, rows * cell_h + padding), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    pixels = tensor_to_uint8(images).numpy()
    for i in range(count):
        x = padding + (i % columns) * cell_w
        y = padding + (i // columns) * cell_h
        canvas.paste(Image.fromarray(pixels[i]), (x, y))
        if labels is not None:
            draw.text((x + 1, y + height + 2), labels[i], fill=(0, 0, 0), font=font)
    return canvas


def save_image_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    nrow: int = 8,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write :func:`make_grid_image` to ``path`` atomically; the format follows the suffix."""
    path = Path(path)
    extension = path.suffix.lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        raise ValueError(f"cannot tell the image format of {path}: use a suffix such as .png or .jpg")
    grid = make_grid_image(images, nrow=nrow, labels=labels)
    return atomic_write(path, lambda tmp: grid.save(tmp, format=image_format))


def save_comparison_grid(
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    path: str | os.PathLike,
    pairs_per_row: int = 4,
    labels: Sequence[str] | None = None,
) -> Path:
    """Save originals and reconstructions side by side: original, reconstruction, original, ...

    ``labels`` (one per pair) are written under the original of each pair.
    """
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"originals {tuple(originals.shape)} and reconstructions "
            f"{tuple(reconstructions.shape)} must have the same shape"
        )
    interleaved = torch.stack([originals.cpu(), reconstructions.cpu()], dim=1).flatten(0, 1)
    cell_labels = None
    if labels is not None:
        if len(labels) != len(originals):
            raise ValueError(f"got {len(labels)} labels for {len(originals)} pairs")
        cell_labels = [text for label in labels for text in (label, "recon")]
    return save_image_grid(interleaved, path, nrow=2 * pairs_per_row, labels=cell_labels)
