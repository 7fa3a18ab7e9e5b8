"""Figures a person would rather look at than read.

Built on ``matplotlib.figure.Figure`` directly (no pyplot state machine), so
figures never leak between calls and nothing needs a display.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure


PNG_METADATA = {"Software": None}
"""No version stamp in the PNGs, so equal figures are equal bytes across machines."""


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


def confusion_matrix_figure(confusion: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """A heatmap of ``[true, predicted]`` counts with the count written in every cell."""
    k = len(class_names)
    fig = Figure(figsize=(8, 7))
    ax = fig.subplots()
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    threshold = confusion.max() / 2
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if confusion[i, j] > threshold else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return fig


def loss_functions_figure(limit: float = 2.0, delta: float = 1.0) -> Figure:
    """The chapter's three regression losses, with y = 0 and the prediction y' on the x axis.

    For each: the loss, its derivative (the gradient a step follows), and the
    likelihood exp(-loss) it corresponds to. L2's gradient grows with the
    error, L1's is a constant +-1 (robust, but unstable near 0), and Huber's
    robust loss is L2 near 0 and L1 beyond ``delta``.
    """
    x = np.linspace(-limit, limit, 401)
    losses = {
        "L2: ½(y - y')²": (0.5 * x**2, x),
        "L1: |y - y'|": (np.abs(x), np.sign(x)),
        f"Huber (δ={delta:g})": (np.where(np.abs(x) > delta, np.abs(x) - delta / 2, 0.5 * x**2),
                                 np.clip(x, -delta, delta)),
    }
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    for ax, (name, (loss, derivative)) in zip(axes, losses.items()):
        ax.plot(x, loss, color="tab:blue", label="loss")
        ax.plot(x, derivative, color="tab:orange", label="derivative")
        ax.plot(x, np.exp(-loss), color="tab:green", label="likelihood exp(-loss)")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(name)
        ax.set_xlabel("prediction y' (true y = 0)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("value")
    axes[0].legend(fontsize=8, loc="upper center")
    fig.suptitle("Regression losses of the chapter: the loss, its gradient and its likelihood")
    return fig


def per_class_f1_figure(rows: Sequence[dict], class_names: Sequence[str]) -> Figure:
    """Grouped bars of per-class F1, one group per class, one bar per model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig = Figure(figsize=(10, 3.8))
    ax = fig.subplots()
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        f1 = [next(r["f1"] for r in rows if r["model"] == model and r["class"] == c) for c in class_names]
        ax.bar(np.arange(len(class_names)) + (i - (len(models) - 1) / 2) * width, f1, width, label=model)
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_ylabel("F1 on the test set")
    ax.set_ylim(0, 1)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Per-class F1: shirts, pullovers and coats are where linear models struggle")
    return fig
