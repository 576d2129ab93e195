"""Real photographs that ship inside installed packages, and how they are cut into a dataset.

The sources are the photographs bundled with scikit-image (``skimage/data/``) and
scikit-learn (``sklearn/datasets/images/``), so the dataset builds offline. Each photo is one
class. Its split is **by region**: a band along the photo's longer side (the right-most
``val_fraction`` of the width, or the bottom of the height for a taller-than-wide photo) is
validation; training boxes are drawn only from the rest, minus a gap of ``gap_fraction`` of
that side next to the band, so no validation pixel (nor its immediate neighbours) ever
appears in a training crop, whatever the box size.

Crops are squares whose side in source pixels is log-uniform between ``min_fraction`` and
``max_fraction`` of the photo's shorter side (never below the output size, so nothing is
upsampled unless the photo is too small), cropped first and then resized with Pillow's
antialiased bicubic filter. A band 25% of the longer side is always at least 25% of the
shorter side, so every box size fits in both regions.

Everything here is a pure function of its arguments (the photo, the geometry, a numpy
``Generator``); files are written by :mod:`imagedata.prepare_scikit_photos`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "Box",
    "PhotoSource",
    "COLOUR_SOURCES",
    "GREY_SOURCES",
    "photo_sources",
    "RegionSplit",
    "split_regions",
    "side_range",
    "boxes_intersect",
    "box_inside",
    "sample_box",
    "render_crop",
    "crop_contrast",
    "sample_crops",
    "crop_rng",
]

Box = tuple[int, int, int, int]  # (left, top, right, bottom), half-open, as PIL's Image.crop

VAL_FRACTION = 0.25
GAP_FRACTION = 0.03
MIN_FRACTION = 1 / 12
MAX_FRACTION = 1 / 4
MIN_STD = 4.0          # grey-level standard deviation (0..255) below which a crop counts as flat
TRAIN_TRIES = 20       # draws per train crop before the least flat one is kept
VAL_TRIES = 64         # draws per val crop looking for one that overlaps no earlier val crop
RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class PhotoSource:
    """One bundled photograph: where it lives, what it shows, where it came from, its licence."""

    name: str      # class folder name
    package: str   # the import name of the package that ships it: skimage | sklearn
    file: str      # path inside that package
    colour: bool
    title: str
    origin: str
    licence: str

    @property
    def distribution(self) -> str:
        return {"skimage": "scikit-image", "sklearn": "scikit-learn"}[self.package]

    @property
    def path(self) -> Path:
        spec = find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"photo {self.name!r} ships with {self.distribution}, which is not installed "
                f"(pip install {self.distribution})"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.file
        if not path.is_file():
            raise FileNotFoundError(
                f"photo {self.name!r}: {path} is missing from this {self.distribution} install "
                f"(it ships in the {self.distribution} wheel; reinstall or upgrade it)"
            )
        return path


_SKIMAGE = "skimage"
_SKLEARN = "sklearn"
_CC_BY_SKLEARN = (
    "CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/): derived crops must keep this "
    "attribution. Retrieved 21 Aug 2011 by Robert Layton for scikit-learn"
)

# Real colour photographs, the default set. stereo_motorcycle's right view is deliberately
# absent: it shows the same scene as the left one, and the two must never be split apart.
COLOUR_SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource(
        "astronaut", _SKIMAGE, "data/astronaut.png", True,
        "Astronaut Eileen Collins (skimage.data.astronaut)",
        "NASA Great Images database, https://flic.kr/p/r9qvLn",
        "Public domain (NASA): no known copyright restrictions",
    ),
    PhotoSource(
        "chelsea", _SKIMAGE, "data/chelsea.png", True,
        "Chelsea the cat (skimage.data.chelsea)",
        "Photograph by Stefan van der Walt",
        "CC0 by the photographer",
    ),
    PhotoSource(
        "coffee", _SKIMAGE, "data/coffee.png", True,
        "Coffee cup (skimage.data.coffee)",
        "Photograph by Rachel Michetti, courtesy of Pikolo Espresso Bar",
        "CC0 by the photographer",
    ),
    PhotoSource(
        "hubble_deep_field", _SKIMAGE, "data/hubble_deep_field.jpg", True,
        "Hubble eXtreme Deep Field (skimage.data.hubble_deep_field)",
        "NASA, HubbleSite release 2012/37, http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
        "Public domain (NASA media guidelines)",
    ),
    PhotoSource(
        "immunohistochemistry", _SKIMAGE, "data/ihc.png", True,
        "Colonic glands, IHC staining (DAB) with hematoxylin counterstain, a microscope photograph "
        "(skimage.data.immunohistochemistry)",
        "Center for Microscopy And Molecular Imaging (CMMI)",
        "No known copyright restrictions",
    ),
    PhotoSource(
        "motorcycle", _SKIMAGE, "data/motorcycle_left.png", True,
        "Motorcycle in a workshop, left view of a rectified stereo pair, down-sampled 4x by "
        "scikit-image (skimage.data.stereo_motorcycle); the right view is not used",
        "Middlebury 2014 stereo benchmark: D. Scharstein et al., High-resolution stereo datasets "
        "with subpixel-accurate ground truth, GCPR 2014; http://vision.middlebury.edu/stereo/data/scenes2014/",
        "No licence stated by scikit-image (redistributed there as sample data); cite the paper",
    ),
    PhotoSource(
        "retina", _SKIMAGE, "data/retina.jpg", True,
        "Fundus photograph of a normal left eye (skimage.data.retina)",
        "Mikael Häggström, Wikimedia Commons, "
        "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
        "CC0 1.0 Universal Public Domain Dedication",
    ),
    PhotoSource(
        "rocket", _SKIMAGE, "data/rocket.jpg", True,
        "Launch of DSCOVR on a Falcon 9 (skimage.data.rocket)",
        "SpaceX, https://www.flickr.com/photos/spacexphotos/16511594820/",
        "Public domain (released by SpaceX)",
    ),
    PhotoSource(
        "china", _SKLEARN, "datasets/images/china.jpg", True,
        "Temple / pagoda above a lake (sklearn.datasets.load_sample_image('china.jpg'))",
        "Flickr, danielbuechele, https://www.flickr.com/photos/danielbuechele/6061409035/",
        "Attribution: 'Some rights reserved by danielbuechele'. " + _CC_BY_SKLEARN,
    ),
    PhotoSource(
        "flower", _SKLEARN, "datasets/images/flower.jpg", True,
        "Dahlia flower (sklearn.datasets.load_sample_image('flower.jpg'))",
        "Flickr, https://www.flickr.com/photos/vultilion/6056698931/ (photographer vultilion)",
        "scikit-learn's README attributes it 'Some rights reserved by danielbuechele' but links the "
        "photographer vultilion; credit both. " + _CC_BY_SKLEARN,
    ),
)

# Greyscale photographs (include_grey=true); read as RGB with three equal channels.
GREY_SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource(
        "camera", _SKIMAGE, "data/camera.png", False,
        "Man with a camera (skimage.data.camera)",
        "Photograph by Lav Varshney",
        "CC0 by the photographer",
    ),
    PhotoSource(
        "coins", _SKIMAGE, "data/coins.png", False,
        "Greek coins from Pompeii (skimage.data.coins)",
        "Brooklyn Museum Collection, https://www.brooklynmuseum.org/opencollection/archives/image/51611",
        "No known copyright restrictions",
    ),
    PhotoSource(
        "moon", _SKIMAGE, "data/moon.png", False,
        "Surface of the moon (skimage.data.moon)",
        "Not stated by scikit-image",
        "Not stated by scikit-image",
    ),
    PhotoSource(
        "grass", _SKIMAGE, "data/grass.png", False,
        "Grass, 512x512 crop converted to grey by scikit-image (skimage.data.grass)",
        "linolafett, DeviantArt, https://www.deviantart.com/linolafett/art/Grass-01-434853879",
        "CC0",
    ),
    PhotoSource(
        "gravel", _SKIMAGE, "data/gravel.png", False,
        "Gravel, rescaled, cropped and converted to grey by scikit-image (skimage.data.gravel)",
        "CC0Textures, https://cc0textures.com/view.php?tex=Gravel04",
        "CC0",
    ),
    PhotoSource(
        "brick", _SKIMAGE, "data/brick.png", False,
        "Brick wall, perspective-corrected, rotated and cropped by scikit-image (skimage.data.brick)",
        "CC0Textures, https://cc0textures.com/view.php?tex=Bricks25",
        "CC0",
    ),
    PhotoSource(
        "clock", _SKIMAGE, "data/clock_motion.png", False,
        "Wall clock, motion-blurred by moving the camera (skimage.data.clock)",
        "Photograph by Stefan van der Walt",
        "Public domain (released by the photographer)",
    ),
    PhotoSource(
        "cell", _SKIMAGE, "data/cell.png", False,
        "Cell floating in saline: a quantitative phase image retrieved from a digital hologram, "
        "not a camera photograph (skimage.data.cell)",
        "P. Müller et al., Optics Express 26(8):10729-10743 (2018), doi:10.1364/OE.26.010729",
        "CC0",
    ),
)


def photo_sources(include_grey: bool = False) -> tuple[PhotoSource, ...]:
    """The colour photographs, plus the greyscale ones when ``include_grey``."""
    return COLOUR_SOURCES + GREY_SOURCES if include_grey else COLOUR_SOURCES


@dataclass(frozen=True)
class RegionSplit:
    """Where a ``width`` x ``height`` photo's val crops and train crops may come from."""

    width: int
    height: int
    axis: str      # "x": the val band is the right edge, "y": the bottom edge
    val: Box       # the held-out band
    train: Box     # train boxes lie inside this; it ends ``gap`` pixels before the band
    gap: int


def split_regions(
    width: int, height: int, val_fraction: float = VAL_FRACTION, gap_fraction: float = GAP_FRACTION
) -> RegionSplit:
    """Hold out the right-most ``val_fraction`` of the width (bottom of the height when the photo
    is taller than wide); train on the rest except a gap of ``gap_fraction`` of that side."""
    if width <= 0 or height <= 0:
        raise ValueError(f"photo size must be positive, got {width}x{height}")
    if not 0.0 < val_fraction < 1.0 or not 0.0 <= gap_fraction or val_fraction + gap_fraction >= 1.0:
        raise ValueError(f"need 0 < val_fraction, 0 <= gap_fraction and a sum below 1, "
                         f"got {val_fraction} and {gap_fraction}")
    axis = "x" if width >= height else "y"
    extent = width if axis == "x" else height
    band = max(1, round(val_fraction * extent))
    gap = math.ceil(gap_fraction * extent)
    train_end = extent - band - gap
    if train_end < 1:
        raise ValueError(f"a {width}x{height} photo leaves no training region")
    if axis == "x":
        return RegionSplit(width, height, axis, (extent - band, 0, width, height), (0, 0, train_end, height), gap)
    return RegionSplit(width, height, axis, (0, extent - band, width, height), (0, 0, width, train_end), gap)


def _size(box: Box) -> tuple[int, int]:
    return box[2] - box[0], box[3] - box[1]


def side_range(
    split: RegionSplit,
    image_size: int,
    min_fraction: float = MIN_FRACTION,
    max_fraction: float = MAX_FRACTION,
) -> tuple[int, int]:
    """(smallest, largest) crop side in source pixels for this photo.

    ``min_fraction`` .. ``max_fraction`` of the shorter side, the lower end raised to
    ``image_size`` (no upsampling) but never above the upper end, and the upper end capped so a
    box fits in both the train region and the val band.
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if not 0.0 < min_fraction <= max_fraction <= 1.0:
        raise ValueError(f"need 0 < min_fraction <= max_fraction <= 1, got {min_fraction}, {max_fraction}")
    short = min(split.width, split.height)
    fits = min(*_size(split.train), *_size(split.val))
    high = min(max(1, math.floor(max_fraction * short)), fits)
    low = min(max(image_size, math.ceil(min_fraction * short)), high)
    return low, high


def boxes_intersect(a: Box, b: Box) -> bool:
    """Whether two half-open boxes share at least one pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def box_inside(inner: Box, outer: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _intersection_area(a: Box, b: Box) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def sample_box(rng: np.random.Generator, region: Box, low: int, high: int) -> Box:
    """A square box inside ``region``, side log-uniform in [low, high] (capped by the region).

    By construction the box never leaves ``region``; that is the whole leakage guarantee, since
    the train region and the val band are disjoint.
    """
    width, height = _size(region)
    cap = min(high, width, height)
    if cap < 1 or low < 1:
        raise ValueError(f"no box of side >= 1 fits in region {region} (sides {low}..{high})")
    low = min(low, cap)
    side = int(round(math.exp(rng.uniform(math.log(low), math.log(cap))))) if cap > low else low
    side = min(max(side, low), cap)
    left = region[0] + int(rng.integers(0, width - side + 1))
    top = region[1] + int(rng.integers(0, height - side + 1))
    box = (left, top, left + side, top + side)
    assert box_inside(box, region), (box, region)
    return box


def render_crop(photo: Image.Image, box: Box, image_size: int) -> Image.Image:
    """Cut ``box`` out of ``photo`` (RGB), then resize it to ``image_size`` square (antialiased
    bicubic). Cropping first means the filter reads no pixel outside the box."""
    crop = photo.crop(box)
    if crop.size != (image_size, image_size):
        crop = crop.resize((image_size, image_size), RESAMPLE)
    return crop


def crop_contrast(crop: Image.Image) -> float:
    """Standard deviation of the crop's grey levels (0..255): near 0 for a flat patch."""
    return float(np.asarray(crop.convert("L"), dtype=np.float64).std())


def crop_rng(seed: int, name: str, split: str) -> np.random.Generator:
    """The generator for one photo and split: independent of which other photos are included."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    split_id = {"train": 0, "val": 1}[split]
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8")), split_id])


def sample_crops(
    photo: Image.Image,
    split: RegionSplit,
    which: str,
    count: int,
    image_size: int,
    rng: np.random.Generator,
    *,
    min_fraction: float = MIN_FRACTION,
    max_fraction: float = MAX_FRACTION,
    min_std: float = MIN_STD,
) -> list[tuple[Box, Image.Image]]:
    """``count`` (box, image_size x image_size crop) pairs from the ``which`` ("train"|"val") region.

    Flat boxes (grey-level std below ``min_std``, e.g. the black corners of the retina) are
    redrawn: train tries up to TRAIN_TRIES boxes and keeps the first that is not flat (else
    the least flat). Val boxes are also kept apart: up to VAL_TRIES draws look for one that
    overlaps no earlier val box; when the band is full, the one overlapping least is kept.
    """
    if which not in ("train", "val"):
        raise ValueError(f"which must be 'train' or 'val', got {which!r}")
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    if photo.size != (split.width, split.height):
        raise ValueError(f"photo is {photo.size}, the split was made for {split.width}x{split.height}")
    region = split.train if which == "train" else split.val
    low, high = side_range(split, image_size, min_fraction, max_fraction)
    chosen: list[tuple[Box, Image.Image]] = []
    tries = TRAIN_TRIES if which == "train" else VAL_TRIES
    for _ in range(count):
        best: tuple[tuple[bool, float, float], Box, Image.Image] | None = None
        for _ in range(tries):
            box = sample_box(rng, region, low, high)
            overlap = 0.0
            if which == "val" and chosen:
                area = (box[2] - box[0]) * (box[3] - box[1])
                overlap = max(_intersection_area(box, kept) for kept, _ in chosen) / area
            if best is not None and (best[0][0], best[0][1]) < (False, overlap):
                continue  # cannot beat a non-flat box that overlaps less
            crop = render_crop(photo, box, image_size)
            contrast = crop_contrast(crop)
            key = (contrast < min_std, overlap, -contrast)
            if best is None or key < best[0]:
                best = (key, box, crop)
            if contrast >= min_std and overlap == 0.0:
                break
        assert best is not None
        chosen.append((best[1], best[2]))
    return chosen
