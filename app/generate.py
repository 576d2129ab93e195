"""The Generate tab: class ids or names -> token sequences (MaskGIT or AR) -> decoded, labelled images."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image
from torch import Tensor

from generator.pipeline import Pipeline

from .checks import check_decode, check_generate, check_seed, resolve_classes
from .decoding import ProgressFn
from .limits import DemoLimits, check_int
from .models import LoadedModels
from .visualize import for_display, token_map

GRID_MAX_COLUMNS = 10  # a single row of generated images wraps after this many (all ten digits fit)


@dataclass
class GenerationResult:
    """What one Generate request returns."""

    images: Tensor  # (B, 3, H, W) in [-1, 1]
    indices: Tensor  # (B, N) int64
    class_ids: list[int]
    labels: list[str]
    grid: Image.Image  # labelled image grid
    token_map: Image.Image  # indices as heatmaps, same layout
    seconds: float
    files: list[str] = field(default_factory=list)  # downloads: samples.png (own size), indices.safetensors


def generation_columns(num_classes: int, per_class: int) -> int:
    """Images per grid row: one row per class; with one image per class (or one class) a single
    row, wrapped after GRID_MAX_COLUMNS, rather than one tall column."""
    if num_classes > 1 and per_class > 1:
        return per_class
    return min(num_classes * per_class, GRID_MAX_COLUMNS)


def generate(models: LoadedModels, limits: DemoLimits, work_dir: Path, classes: Sequence[int | str],
             generator: str = "MaskGIT", samples_per_class: int = 1, steps: int | None = None,
             cfg: float | None = None, temperature: float | None = None, seed: int = 0,
             decode_steps: int | None = None, decode_cfg: float | None = None,
             progress: ProgressFn | None = None) -> GenerationResult:
    """Class ids or names -> generated images (class by class, samples_per_class each).

    The tokens decode through the set's generation decoder (its sampling decoder when it has one).
    Generator and decoder settings left None come from the models' saved defaults (as everywhere here);
    the downloads go to a folder of their own under ``work_dir``.
    """
    from runkit.images import make_grid_image

    start = time.perf_counter()
    slot = models.resolve_generator(generator)
    class_ids = resolve_classes(models, classes)
    per_class = check_int("samples per class", samples_per_class, 1, limits.max_batch)
    if len(class_ids) * per_class > limits.max_batch:
        raise ValueError(f"{len(class_ids)} classes × {per_class} samples = {len(class_ids) * per_class} "
                         f"images; at most {limits.max_batch} per request (limits.max_batch)")
    steps, cfg, temperature = check_generate(models, limits, generator, steps, cfg, temperature)
    seed = check_seed(seed)
    decode_steps, decode_cfg = check_decode(limits, models.generation_decoder, decode_steps, decode_cfg)

    pipe = Pipeline(models.generators[slot], models.generation_decoder)
    out = pipe.generate([c for c in class_ids for _ in range(per_class)], seed=seed, decode_steps=decode_steps,
                        decode_cfg=decode_cfg, batch_size=limits.max_batch, progress=progress, num_steps=steps,
                        cfg_scale=cfg, temperature=temperature)
    labels = [models.class_names[c] for c in out.class_ids]
    nrow = generation_columns(len(class_ids), per_class)
    files = save_generation(work_dir, out.images, out.indices, out.class_ids, labels, nrow)
    return GenerationResult(
        images=out.images, indices=out.indices, class_ids=out.class_ids, labels=labels,
        grid=make_grid_image(for_display(out.images), nrow=nrow, labels=labels),
        token_map=token_map(models.tokenizer, out.indices, nrow, labels),
        seconds=time.perf_counter() - start, files=files)


def save_generation(work_dir: Path, images: Tensor, indices: Tensor, class_ids: list[int], labels: list[str],
                    nrow: int) -> list[str]:
    """The downloads of one request, in a folder of its own: the images at their own size (the grid
    ``generator.sample out=`` writes) and their token indices with class ids (its ``save_indices=``)."""
    from generator.sample import save_indices
    from runkit.images import save_image_grid

    root = work_dir / "generate"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=root))
    return [str(save_image_grid(images, folder / "samples.png", nrow=nrow, labels=labels)),
            str(save_indices(folder / "indices.safetensors", indices, class_ids))]
