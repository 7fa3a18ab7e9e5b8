"""The training curves: each train stage's figure, and the report's of both models."""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure


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
