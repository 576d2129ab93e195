"""Pictures of what the models produce: display-size images, token heatmaps and maps, metric plots (PIL)."""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import torch
from PIL import Image
from torch import Tensor

DISPLAY_MIN_SIZE = 128  # grids show digits-sized images at least this large


def for_display(images: Tensor, min_size: int = DISPLAY_MIN_SIZE) -> Tensor:
    """Upscale small images (B, 3, H, W) by an integer factor (nearest) so pixels stay visible."""
    factor = -(-min_size // images.shape[-1])
    if factor <= 1:
        return images
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def grid_shape(n: int) -> tuple[int, int]:
    """The most square (rows, cols) with rows * cols == n and rows <= cols (512 -> (16, 32))."""
    if n < 1:
        raise ValueError(f"need at least one token, got {n}")
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def token_heatmaps(indices: Tensor, vocab_size: int, cell: int = 8, colormap: str = "viridis") -> Tensor:
    """Indices (B, N) -> colour images (B, 3, rows*cell, cols*cell) in [-1, 1], one cell per index.

    Index value v maps to colormap(v / (vocab_size - 1)); cells run row-major in sequence order.
    """
    from matplotlib import colormaps

    if indices.dim() != 2:
        raise ValueError(f"indices must be B x N, got {tuple(indices.shape)}")
    rows, cols = grid_shape(indices.shape[1])
    table = torch.from_numpy(colormaps[colormap](torch.linspace(0, 1, vocab_size).numpy())[:, :3]).float()
    colours = table[indices.cpu().clamp(0, vocab_size - 1)]  # (B, N, 3)
    image = colours.view(-1, rows, cols, 3).permute(0, 3, 1, 2)
    image = image.repeat_interleave(cell, dim=2).repeat_interleave(cell, dim=3)
    return image * 2 - 1


def token_map(tokenizer: Any, indices: Tensor, nrow: int, labels: list[str]) -> Image.Image:
    """Indices (B, N) as labelled heatmaps, laid out like the grid of their images."""
    from runkit.images import make_grid_image

    _, cols = grid_shape(indices.shape[1])
    cell = max(2, -(-DISPLAY_MIN_SIZE // cols))
    return make_grid_image(token_heatmaps(indices, tokenizer.config.vocab_size, cell=cell),
                           nrow=nrow, labels=labels)


def figure_to_image(figure) -> Image.Image:
    """Render a matplotlib Figure to an RGB PIL image and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def metrics_bar_plot(values: dict[str, float], title: str, calibrated: bool) -> Image.Image:
    """A bar per metric, its value written on the bar; UNCALIBRATED in red across the title."""
    import matplotlib

    from generator.gfid import UNCALIBRATED

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names: Sequence[str] = list(values)
    figure, axis = plt.subplots(figsize=(1.6 * max(len(names), 2) + 1, 3.2))
    bars = axis.bar(names, [values[n] for n in names], color="#4c72b0")
    for bar, name in zip(bars, names):
        axis.annotate(f"{values[name]:.4g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=9)
    axis.set_title(title if calibrated else f"{title}\n{UNCALIBRATED}",
                   color="black" if calibrated else "#c00000", fontsize=10)
    axis.spines[["top", "right"]].set_visible(False)
    return figure_to_image(figure)
