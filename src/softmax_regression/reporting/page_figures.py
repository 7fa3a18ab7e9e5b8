"""The figures only the report page shows: the chapter's loss functions and the per-class F1."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure


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
