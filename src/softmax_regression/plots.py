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


def figure_png_bytes(fig: Figure, dpi: int = 100, crop: bool = True) -> bytes:
    """The figure as PNG bytes. ``crop`` cuts it to what is drawn (``bbox_inches="tight"``), which draws
    it twice; a figure whose fixed margins hold all it draws (:func:`confusion_matrix_figure`) is drawn
    once, as it is, with ``crop=False``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata=PNG_METADATA, **({"bbox_inches": "tight"} if crop else {}))
    return buffer.getvalue()


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
    """The chapter's animator plot, in two panels: the mean train loss, and train and validation accuracy,
    against epoch. Each panel scales to its own data (a first epoch's large loss, a slow lr's low
    accuracy stay in view); the legends sit below the panels, clear of the lines.

    ``histories`` maps a model name to its EpochRecords; several models share
    the panels, one line style each.
    """
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    for i, (name, history) in enumerate(histories.items()):
        epochs = [r.epoch for r in history]
        suffix = f" ({name})" if len(histories) > 1 else ""
        style = styles[i % len(styles)]
        loss_ax.plot(epochs, [r.train_loss for r in history], style, color="tab:blue", marker="o", markersize=3,
                     label="train loss" + suffix)
        acc_ax.plot(epochs, [r.train_acc for r in history], style, color="tab:purple", marker="o", markersize=3,
                    label="train accuracy" + suffix)
        acc_ax.plot(epochs, [r.val_acc for r in history], style, color="tab:green", marker="o", markersize=3,
                    label="validation accuracy" + suffix)
    for ax, ylabel in ((loss_ax, "mean train loss (train.loss)"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.margins(y=0.1)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)
    loss_ax.set_title("train loss")
    acc_ax.set_title("accuracy")
    fig.suptitle(title)
    return fig


def confusion_matrix_figure(confusion: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """A heatmap of ``[true, predicted]`` counts with the count written in every cell.

    Its margins are fixed and hold the rotated class names, the colorbar's label and a title of about
    70 characters, so it can be saved uncropped (``figure_png_bytes(..., crop=False)``), drawn once."""
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
    fig.subplots_adjust(left=0.13, right=0.90, bottom=0.15, top=0.94)
    return fig


def huber(x: np.ndarray, delta: float = 1.0) -> np.ndarray:
    """Huber's robust loss of the error x: x^2 / (2 delta) within delta, |x| - delta / 2 beyond (the
    two meet, with equal slope +-1, at |x| = delta)."""
    x = np.asarray(x, dtype=float)
    return np.where(np.abs(x) > delta, np.abs(x) - delta / 2, x ** 2 / (2 * delta))


def huber_derivative(x: np.ndarray, delta: float = 1.0) -> np.ndarray:
    """d huber / dx: x / delta within delta, sign(x) beyond."""
    x = np.asarray(x, dtype=float)
    return np.clip(x / delta, -1.0, 1.0)


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
        f"Huber (δ={delta:g})": (huber(x, delta), huber_derivative(x, delta)),
    }
    fig = Figure(figsize=(12, 3.9), layout="constrained")
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
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=9,
               frameon=False)  # below the panels: every line stays in view
    fig.suptitle("Regression losses of the chapter: the loss, its gradient and its likelihood")
    return fig


def per_class_f1_figure(rows: Sequence[dict], class_names: Sequence[str]) -> Figure:
    """Grouped bars of per-class F1, one group per class, one bar per model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        f1 = [next(r["f1"] for r in rows if r["model"] == model and r["class"] == c) for c in class_names]
        ax.bar(np.arange(len(class_names)) + (i - (len(models) - 1) / 2) * width, f1, width, label=model)
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_ylabel("F1 on the test set")
    ax.set_ylim(0, 1)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the bars
    ax.set_title("Per-class F1 on the test set")
    return fig


def reliability_figure(before, after, title: str) -> Figure:
    """A reliability diagram: per confidence bin, the accuracy (bars, the images in each bin written at their
    foot) against the diagonal of a calibrated model; the accuracy after temperature scaling as points.
    ``before`` and ``after`` are :class:`~softmax_regression.calibration.Reliability` of one test split."""
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.subplots()
    width = np.diff(before.edges)
    filled = before.counts > 0
    ax.bar(before.edges[:-1][filled], before.accuracy[filled], width=width[filled], align="edge",
           color="#4c72b0", edgecolor="white", label=f"accuracy per bin (ECE {before.ece():.4f})")
    ax.bar(before.edges[:-1][filled], before.confidence[filled] - before.accuracy[filled],
           bottom=before.accuracy[filled], width=width[filled], align="edge", color="#dd8452", alpha=0.45,
           edgecolor="#dd8452", hatch="//", label="gap to the mean confidence")
    calibrated = after.counts > 0
    ax.plot(after.confidence[calibrated], after.accuracy[calibrated], "o", color="black", markersize=4,
            label=f"after temperature scaling (ECE {after.ece():.4f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="calibrated")
    for low, w, acc, n in zip(before.edges[:-1][filled], width[filled], before.accuracy[filled],
                              before.counts[filled]):  # the images in each bin, at its foot
        ax.text(low + w / 2, 0.01, str(int(n)), ha="center", va="bottom", fontsize=6.5, rotation=90,
                color="white" if acc > 0.12 else "black")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence (probability of the predicted class)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
