"""Figures a person would rather look at than read.

Built on ``matplotlib.figure.Figure`` directly (no pyplot state machine), so
figures never leak between calls and nothing needs a display.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .atomic import atomic_path

PNG_METADATA = {"Software": None}
"""No version stamp in the PNGs, so equal figures are equal bytes across machines."""


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata=PNG_METADATA, bbox_inches="tight")


def figure_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata=PNG_METADATA, bbox_inches="tight")
    return buffer.getvalue()


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
    fig = Figure(figsize=(cols * scale, rows * (scale + 0.35)))
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


def training_curves_figure(histories: dict[str, Sequence], title: str = "Training curves") -> Figure:
    """The chapter's animator plot: train loss, train accuracy and validation accuracy against epoch.

    ``histories`` maps a model name to its EpochRecords; several models share
    the axes, one line style each.
    """
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    metric_colors = {"train_loss": "tab:blue", "train_acc": "tab:purple", "val_acc": "tab:green"}
    styles = ["-", "--", ":", "-."]
    for i, (name, history) in enumerate(histories.items()):
        epochs = [r.epoch for r in history]
        for metric, color in metric_colors.items():
            label = metric.replace("_", " ") + (f" ({name})" if len(histories) > 1 else "")
            ax.plot(epochs, [getattr(r, metric) for r in history], styles[i % len(styles)],
                    color=color, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / accuracy")
    ax.set_ylim(0.3, 0.95)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncols=2 if len(histories) > 1 else 1)
    ax.set_title(title)
    return fig
