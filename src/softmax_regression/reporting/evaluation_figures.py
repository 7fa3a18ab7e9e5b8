"""The evaluate stage's figures: confusion matrices and reliability diagrams."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure


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


def reliability_figure(before, after, title: str) -> Figure:
    """A reliability diagram: per confidence bin, the accuracy (bars, the images in each bin written at their
    foot) against the diagonal of a calibrated model; the accuracy after temperature scaling as points.
    ``before`` and ``after`` are :class:`~softmax_regression.evaluation.calibration.Reliability` of one test split."""
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
