"""Classic-codec baselines at a fixed bit budget: thumbnails, JPEG and WebP.

A tokenizer spends a fixed number of bits per image (``code_length * context_dim``); these
codecs are held to the same budget so rate–distortion numbers compare like with like. Each
codec counts only its payload, never container headers or tables (said per function), which
favours the codecs: at a few hundred bits the headers alone would exceed the budget.

Images go in and out as uint8 numpy arrays (N, H, W, 3). ``grey=True`` means grey data
replicated to RGB (e.g. digits): the codecs then code one channel and replicate it back.
"""

from __future__ import annotations

import io
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
from PIL import Image, features

from runkit.images import uint8_to_tensor
from evaluation.metrics import psnr

__all__ = [
    "JPEG_QUALITIES",
    "WEBP_QUALITIES",
    "WEBP_AVAILABLE",
    "RIFF_HEADER_BYTES",
    "CHUNK_HEADER_BYTES",
    "VP8_FRAME_HEADER_BYTES",
    "ThumbnailSetting",
    "ThumbnailChoice",
    "BudgetResult",
    "check_images",
    "is_grey",
    "to_pil",
    "from_pil",
    "quantise",
    "thumbnail",
    "thumbnail_bits",
    "thumbnail_candidates",
    "best_thumbnail",
    "encode_jpeg",
    "jpeg_scan_bytes",
    "jpeg_scan_bits",
    "jpeg_header_bytes",
    "jpeg_at_budgets",
    "jpeg_at_budget",
    "encode_webp",
    "webp_vp8_payload_bytes",
    "webp_payload_bits",
    "webp_at_budgets",
    "webp_at_budget",
]

JPEG_QUALITIES = range(1, 101)
WEBP_QUALITIES = range(0, 101)
WEBP_AVAILABLE = features.check("webp")
RIFF_HEADER_BYTES = 12  # "RIFF", file size, "WEBP"
CHUNK_HEADER_BYTES = 8  # fourcc, payload size
VP8_FRAME_HEADER_BYTES = 10  # 3-byte frame tag + start code 9d 01 2a + 14-bit width and height


class ThumbnailSetting(NamedTuple):
    size: int  # the thumbnail is size x size
    bits: int  # bits per channel sample, 1..8


class ThumbnailChoice(NamedTuple):
    size: int
    bits: int
    total_bits: int  # bits per image actually spent, <= the budget
    mean_psnr: float  # over the set it was chosen on


class BudgetResult(NamedTuple):
    """A codec run at one budget: what each image got and whether it fitted."""

    recon: np.ndarray  # (N, H, W, 3) uint8
    qualities: np.ndarray  # (N,) int, the quality each image was coded at
    bits: np.ndarray  # (N,) int, payload bits each image spent
    fits: np.ndarray  # (N,) bool, bits <= budget (False: even the lowest quality is over budget)


# ---------------------------------------------------------------------------------------- images
def is_grey(images: np.ndarray) -> bool:
    """True when all three channels are equal on every image of (N, H, W, 3)."""
    return bool((images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all())


def check_images(images: np.ndarray, grey: bool) -> None:
    """Raise unless ``images`` is uint8 (N, H, W, 3), with equal channels when ``grey``."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        shape = getattr(images, "shape", None)
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {type(images).__name__} of shape {shape}")
    if grey and not is_grey(images):
        raise ValueError("grey=True needs grey images (all three channels equal)")


def to_pil(image: np.ndarray, grey: bool) -> Image.Image:
    """(H, W, 3) uint8 -> PIL 'L' (its first channel) when grey, else 'RGB'."""
    return Image.fromarray(image[..., 0], "L") if grey else Image.fromarray(image, "RGB")


def from_pil(img: Image.Image, grey: bool) -> np.ndarray:
    """PIL image -> (H, W, 3) uint8; grey data is read as luma and replicated to three channels."""
    if grey:
        return np.repeat(np.asarray(img.convert("L"))[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"))


def _mean_psnr(images: np.ndarray, recon: np.ndarray) -> float:
    return float(psnr(uint8_to_tensor(images), uint8_to_tensor(recon)).mean())


# ------------------------------------------------------------------------------------ thumbnails
def quantise(values: np.ndarray, bits: int) -> np.ndarray:
    """Uniform quantiser of values in [0, 255] to the 2**bits levels k·255 / (2**bits − 1), nearest.

    The levels include 0 and 255 (plain bit-depth reduction), so black and white survive
    exactly: on images with large flat backgrounds (digits) this is worth about 1 dB over
    bin-centre levels. 8 bits gives back every integer unchanged. Returns float64, same shape.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    step = 255.0 / (2**bits - 1)
    return np.clip(np.rint(np.asarray(values, dtype=np.float64) / step), 0, 2**bits - 1) * step


def thumbnail_bits(size: int, bits: int, grey: bool) -> int:
    """Bits a thumbnail spends: size·size samples of ``bits`` each, per coded channel (1 grey, 3 colour)."""
    return size * size * bits * (1 if grey else 3)


def _thumbnail_plane(plane: np.ndarray, size: int, bits: int) -> np.ndarray:
    """(H, W) uint8 -> (H, W) float32: box-average down to size×size, quantise, bicubic back up."""
    height, width = plane.shape
    # Mode 'F' keeps the box averages and the upsampled values unrounded until the very end.
    small = Image.fromarray(plane.astype(np.float32), "F").resize((size, size), Image.Resampling.BOX)
    coded = Image.fromarray(quantise(np.asarray(small), bits).astype(np.float32), "F")
    return np.asarray(coded.resize((width, height), Image.Resampling.BICUBIC))


def thumbnail(images: np.ndarray, size: int, bits: int, grey: bool) -> np.ndarray:
    """Code every image as a size×size thumbnail of ``bits`` per sample; (N, H, W, 3) uint8 -> same.

    Downsampling is an antialiased box (area) filter, upsampling is bicubic (PIL). Bits spent
    per image: :func:`thumbnail_bits` (the decoder is assumed to know size, bits and H×W).
    """
    check_images(images, grey)
    if not 1 <= size <= min(images.shape[1:3]):
        raise ValueError(f"thumbnail size must be in 1..{min(images.shape[1:3])}, got {size}")
    channels = 1 if grey else 3
    recon = np.empty(images.shape, dtype=np.uint8)
    for i, image in enumerate(images):
        planes = [_thumbnail_plane(image[..., c], size, bits) for c in range(channels)]
        coded = np.clip(np.rint(np.stack(planes, axis=-1)), 0, 255).astype(np.uint8)
        recon[i] = np.broadcast_to(coded, image.shape)  # grey: the one coded plane to all three channels
    return recon


def thumbnail_candidates(budget_bits: int, image_size: int, grey: bool) -> list[ThumbnailSetting]:
    """Every thumbnail size 1..image_size that fits the budget, each with the most bits (≤ 8) that fit.

    Empty when the budget is below one bit per coded channel.
    """
    candidates = []
    for size in range(1, image_size + 1):
        fitting = [bits for bits in range(1, 9) if thumbnail_bits(size, bits, grey) <= budget_bits]
        if fitting:
            candidates.append(ThumbnailSetting(size, max(fitting)))
    return candidates


def best_thumbnail(images: np.ndarray, budget_bits: int, grey: bool) -> tuple[np.ndarray, ThumbnailChoice]:
    """The thumbnail candidate with the highest mean PSNR over ``images``: (recon, choice).

    The setting is picked with knowledge of the very set it is scored on (an oracle choice of
    size and bit depth), which favours the baseline. That is intentional: a strong baseline.
    Every image spends ``choice.total_bits`` ≤ ``budget_bits``.
    """
    check_images(images, grey)
    candidates = thumbnail_candidates(budget_bits, min(images.shape[1:3]), grey)
    if not candidates:
        raise ValueError(f"no thumbnail fits in {budget_bits} bits (the smallest needs {thumbnail_bits(1, 1, grey)})")
    best: tuple[np.ndarray, ThumbnailChoice] | None = None
    for size, bits in candidates:
        recon = thumbnail(images, size, bits, grey)
        score = _mean_psnr(images, recon)
        if best is None or score > best[1].mean_psnr:
            best = recon, ThumbnailChoice(size, bits, thumbnail_bits(size, bits, grey), score)
    return best


# ------------------------------------------------------------------------ search over a quality
def _at_budgets(
    images: np.ndarray,
    budgets: Sequence[int],
    grey: bool,
    encode: Callable[[Image.Image, int], bytes],
    payload_bytes: Callable[[bytes], int],
    qualities: Iterable[int],
) -> list[BudgetResult]:
    """Per image and budget, the highest quality whose payload fits, else the lowest quality.

    Every quality is encoded once per image and the budgets share those encodings. No
    monotonicity of size in quality is assumed: the answer is the highest fitting quality.
    """
    check_images(images, grey)
    qualities = np.array(sorted(qualities))
    count = len(images)
    results = [BudgetResult(np.empty(images.shape, dtype=np.uint8), np.empty(count, dtype=np.int64),
                            np.empty(count, dtype=np.int64), np.empty(count, dtype=bool)) for _ in budgets]
    for i, image in enumerate(images):
        img = to_pil(image, grey)
        encoded = [encode(img, int(q)) for q in qualities]
        bits = np.array([8 * payload_bytes(data) for data in encoded])
        for budget, result in zip(budgets, results):
            fitting = np.flatnonzero(bits <= budget)
            pick = int(fitting[-1]) if fitting.size else 0
            result.recon[i] = from_pil(Image.open(io.BytesIO(encoded[pick])), grey)
            result.qualities[i], result.bits[i], result.fits[i] = qualities[pick], bits[pick], fitting.size > 0
    return results


# ------------------------------------------------------------------------------------------ JPEG
def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Baseline JPEG by Pillow with optimised Huffman tables; colour with 4:2:0 chroma, grey as 'L'."""
    buffer = io.BytesIO()
    options = {} if img.mode == "L" else {"subsampling": "4:2:0"}
    img.save(buffer, format="JPEG", quality=quality, optimize=True, **options)
    return buffer.getvalue()


def _scan_end(data: bytes, start: int) -> int:
    """Offset of the marker that ends the entropy-coded data starting at ``start``.

    Inside a scan 0xFF is followed by 0x00 (a stuffed data byte) or by a restart marker
    RST0..7 (part of the scan); any other byte after 0xFF starts the next marker.
    """
    position = start
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            raise ValueError("JPEG scan runs to the end of the data without a closing marker")
        following = data[position + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            position += 2
        else:
            return position


def jpeg_scan_bytes(data: bytes) -> int:
    """Entropy-coded bytes of a JPEG file: all bytes after each SOS segment header up to the next marker.

    Segments are walked by their length fields from SOI to EOI; stuffed 0xFF00 bytes and
    restart markers inside a scan count as scan bytes. Everything else (SOI, APPn, DQT, SOF,
    DHT, the SOS headers, EOI) is header. Several scans (progressive JPEG) are summed.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG: no SOI marker")
    position, scan = 2, 0
    while True:
        if position + 2 > len(data) or data[position] != 0xFF:
            raise ValueError(f"JPEG: expected a marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker == 0xD9:  # EOI
            return scan
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers carry no length
            position += 2
        else:
            length = int.from_bytes(data[position + 2:position + 4], "big")
            position += 2 + length
            if marker == 0xDA:  # SOS: the entropy-coded data follows its header
                end = _scan_end(data, position)
                scan += end - position
                position = end


def jpeg_scan_bits(img: Image.Image, quality: int) -> int:
    """Bits of the entropy-coded scan of :func:`encode_jpeg` (headers and tables not counted)."""
    return 8 * jpeg_scan_bytes(encode_jpeg(img, quality))


def jpeg_header_bytes(img: Image.Image, quality: int) -> int:
    """Bytes of :func:`encode_jpeg`'s file that :func:`jpeg_scan_bits` leaves out (markers, tables, headers)."""
    data = encode_jpeg(img, quality)
    return len(data) - jpeg_scan_bytes(data)


def jpeg_at_budgets(images: np.ndarray, budgets: Sequence[int], grey: bool) -> list[BudgetResult]:
    """:func:`jpeg_at_budget` for several budgets at the cost of one search (one result per budget)."""
    return _at_budgets(images, budgets, grey, encode_jpeg, jpeg_scan_bytes, JPEG_QUALITIES)


def jpeg_at_budget(images: np.ndarray, budget_bits: int, grey: bool) -> BudgetResult:
    """Per image, JPEG at the highest quality 1..100 whose scan bits (:func:`jpeg_scan_bits`) ≤ budget.

    An image for which even quality 1 is over budget gets ``fits=False`` and its quality-1
    decode (shown, but the caller must report how many did not fit).
    """
    return jpeg_at_budgets(images, [budget_bits], grey)[0]


# ------------------------------------------------------------------------------------------ WebP
def encode_webp(img: Image.Image, quality: int) -> bytes:
    """Lossy WebP (VP8) by Pillow's libwebp at its slowest, best setting (method 6)."""
    if not WEBP_AVAILABLE:
        raise RuntimeError("this Pillow was built without WebP support")
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, format="WEBP", quality=quality, method=6, lossless=False)
    return buffer.getvalue()


def webp_vp8_payload_bytes(data: bytes) -> int:
    """Bytes of the VP8 bitstream in a WebP file: the 'VP8 ' chunk payload minus its 10-byte frame header.

    Not counted: the RIFF header (12 bytes), the chunk header (8), the key-frame header (3-byte
    frame tag, start code, width and height: 10) and a chunk's pad byte. A file without a
    lossy 'VP8 ' chunk (e.g. lossless 'VP8L') is an error rather than a silently wrong count.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP file: no RIFF/WEBP header")
    position, chunks = RIFF_HEADER_BYTES, []
    while position + CHUNK_HEADER_BYTES <= len(data):
        fourcc = data[position:position + 4]
        size = int.from_bytes(data[position + 4:position + 8], "little")
        if fourcc == b"VP8 ":
            payload = data[position + CHUNK_HEADER_BYTES:position + CHUNK_HEADER_BYTES + size]
            if len(payload) < VP8_FRAME_HEADER_BYTES or payload[0] & 1 or payload[3:6] != b"\x9d\x01\x2a":
                raise ValueError("WebP 'VP8 ' chunk does not start with a VP8 key-frame header")
            return size - VP8_FRAME_HEADER_BYTES
        chunks.append(fourcc.decode("latin-1"))
        position += CHUNK_HEADER_BYTES + size + (size & 1)
    raise ValueError(f"WebP file has no lossy 'VP8 ' chunk (chunks: {chunks}); only lossy VP8 payloads are counted")


def webp_payload_bits(img: Image.Image, quality: int) -> int:
    """Bits of the VP8 bitstream of :func:`encode_webp` (see :func:`webp_vp8_payload_bytes`)."""
    return 8 * webp_vp8_payload_bytes(encode_webp(img, quality))


def webp_at_budgets(images: np.ndarray, budgets: Sequence[int], grey: bool) -> list[BudgetResult]:
    """:func:`webp_at_budget` for several budgets at the cost of one search (one result per budget)."""
    return _at_budgets(images, budgets, grey, encode_webp, webp_vp8_payload_bytes, WEBP_QUALITIES)


def webp_at_budget(images: np.ndarray, budget_bits: int, grey: bool) -> BudgetResult:
    """Per image, lossy WebP at the highest quality 0..100 whose VP8 payload bits ≤ budget.

    Grey data is coded as RGB (WebP has no grey mode; its constant chroma costs little) and
    read back as luma. Images that do not fit even at quality 0 get ``fits=False`` and their
    quality-0 decode.
    """
    return webp_at_budgets(images, [budget_bits], grey)[0]
