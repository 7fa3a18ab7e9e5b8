"""Grids of images with a title over each: the data preview (preprocess) and the report's predictions."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import rcParams
from matplotlib.figure import Figure

HEADLINE_BAND = 0.44
"""Inches above the top row that two-line titles and a headline need: what the default layout leaves a grid of
two rows; a single row gets the difference added on top."""


def grid_shape(n: int, max_cols: int = 9) -> tuple[int, int]:
    """``(rows, cols)`` of a grid holding ``n`` images, at most ``max_cols`` a row."""
    cols = max(1, min(n, max_cols))
    return -(-n // cols), cols


def image_grid_figure(
    images: np.ndarray,
    titles: Sequence[str],
    rows: int,
    cols: int,
    suptitle: str | None = None,
    title_colors: Sequence[str] | None = None,
    scale: float = 1.5,
) -> Figure:
    """A grid of grey images with a title over each: the chapter's ``show_images``."""
    n = min(len(images), rows * cols)
    side = int(round(np.sqrt(images.shape[-1]))) if images.ndim == 2 else images.shape[-1]
    height = rows * (scale + 0.35)
    band = (1 - rcParams["figure.subplot.top"]) * height  # above the top row, for its titles and the headline
    extra = max(0.0, HEADLINE_BAND - band) if suptitle else 0.0
    fig = Figure(figsize=(cols * scale, height + extra))
    if extra:  # one row: the headline would sit on the titles
        fig.subplots_adjust(top=1 - (band + extra) / (height + extra),
                            bottom=rcParams["figure.subplot.bottom"] * height / (height + extra))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(images[i].reshape(side, side), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(titles[i], fontsize=8, color=title_colors[i] if title_colors else "black")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig
