"""The report's figures: the maths they draw, and a layout where nothing covers anything else."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from softmax_regression import CLASS_NAMES
from softmax_regression.reporting.curves import training_curves_figure
from softmax_regression.reporting.evaluation_figures import confusion_matrix_figure
from softmax_regression.reporting.images import image_grid_figure
from softmax_regression.reporting.page import chapter_bar
from softmax_regression.reporting.page_figures import (
    huber,
    huber_derivative,
    loss_functions_figure,
    per_class_f1_figure,
)
from softmax_regression.training.history import EpochRecord


@pytest.mark.parametrize("delta", [0.25, 0.5, 1.0, 2.0, 3.5])
def test_huber_is_the_formula_for_any_delta(delta):
    x = np.linspace(-4, 4, 801)
    expected = np.array([abs(v) - delta / 2 if abs(v) > delta else v * v / (2 * delta) for v in x])
    np.testing.assert_allclose(huber(x, delta), expected, rtol=0, atol=1e-12)
    # continuous, with slope +-1, where the two pieces meet; the derivative is the loss's slope
    np.testing.assert_allclose(huber(np.array([delta, -delta]), delta), [delta / 2, delta / 2])
    h = 1e-6
    inner = np.linspace(-4, 4, 97)
    numeric = (huber(inner + h, delta) - huber(inner - h, delta)) / (2 * h)
    np.testing.assert_allclose(huber_derivative(inner, delta), numeric, rtol=0, atol=1e-5)


def text_boxes(fig):
    """The window extents of the suptitle, every axes title and every legend, after a real draw."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = []
    if fig._suptitle is not None and fig._suptitle.get_text():
        boxes.append(("suptitle", fig._suptitle.get_window_extent(renderer)))
    for i, legend in enumerate(fig.legends):
        boxes.append((f"figure legend {i}", legend.get_window_extent(renderer)))
    for i, ax in enumerate(fig.axes):
        if ax.get_title():
            boxes.append((f"title {i}", ax.title.get_window_extent(renderer)))
        legend = ax.get_legend()
        if legend is not None:
            boxes.append((f"legend {i}", legend.get_window_extent(renderer)))
    return boxes, renderer


def histories():
    records = [EpochRecord(e, 2.5 / e, 0.6 + 0.02 * e, 0.58 + 0.02 * e) for e in range(1, 11)]
    return {"scratch": records, "concise": records}


FIGURES = {
    "training curves": lambda: training_curves_figure(histories(), title="Training curves: scratch and concise"),
    "loss functions": lambda: loss_functions_figure(delta=0.5),
    "per-class F1": lambda: per_class_f1_figure(
        [{"model": m, "class": c, "f1": 0.5 + 0.04 * i} for m in ("scratch", "concise", "baseline")
         for i, c in enumerate(CLASS_NAMES)], CLASS_NAMES),
    "confusion": lambda: confusion_matrix_figure(np.arange(100).reshape(10, 10), CLASS_NAMES, "a title"),
    "mistakes grid": lambda: image_grid_figure(  # the report's gallery: the longest class names, two lines
        np.zeros((18, 784), dtype=np.uint8), ["true ankle boot\npred ankle boot (1.00)"] * 18, 2, 9,
        suptitle="The model's 18 most confident mistakes", title_colors=["red"] * 18, scale=2.0),
    # a single row (report.n_images or n_mistakes up to 9): the headline has the least room above it
    "predictions in one row": lambda: image_grid_figure(
        np.zeros((9, 784), dtype=np.uint8), ["ankle boot\nankle boot"] * 9, 1, 9,
        suptitle="First 9 test images: true label (top) and the scratch model's prediction (bottom, red if wrong)"),
    "one mistake": lambda: image_grid_figure(
        np.zeros((1, 784), dtype=np.uint8), ["true ankle boot\npred ankle boot (1.00)"], 1, 1,
        suptitle="The model's 1 most confident mistakes", title_colors=["red"], scale=2.0),
}


@pytest.mark.parametrize("name", FIGURES)
def test_no_title_or_legend_overlaps_another(name):
    fig = FIGURES[name]()
    boxes, _ = text_boxes(fig)
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{name}: {a} overlaps {b}"


def test_the_confusion_figure_holds_everything_it_draws_inside_its_margins():
    """evaluate saves it uncropped: every label, the title and the colorbar lie inside the figure."""
    fig = confusion_matrix_figure(np.diag(np.full(10, 1000)), CLASS_NAMES,  # a class has 1000 test images
                                  "baseline: confusion matrix on the test set (accuracy 0.8452)")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    inside = fig.bbox.padded(-2)  # two pixels clear of the edge
    for ax in fig.axes:  # the heatmap and the colorbar, with their labels, titles and ticks
        box = ax.get_tightbbox(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, \
            (ax.get_label(), box, fig.bbox)


@pytest.mark.parametrize("name", ["training curves", "per-class F1"])
def test_legends_stay_clear_of_the_plotted_data(name):
    fig = FIGURES[name]()
    _, renderer = text_boxes(fig)
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)), name


def test_training_curves_scale_to_their_data():
    """A first epoch's loss of 2.5 and accuracies from 0.6 stay inside their panels."""
    fig = FIGURES["training curves"]()
    loss_ax, acc_ax = fig.axes[:2]
    assert loss_ax.get_ylim()[1] > 2.5 and loss_ax.get_ylim()[0] < 0.25
    assert acc_ax.get_ylim()[0] < 0.6 and acc_ax.get_ylim()[1] > 0.8


def test_the_chapters_bar_is_checked_for_the_run():
    good = chapter_bar("scratch", {"train loss": 0.45, "train accuracy": 0.85, "test accuracy": 0.83})
    assert good.endswith("the chapter's bar is met.") and good.count("(yes)") == 3
    bad = chapter_bar("concise", {"train loss": 0.62, "train accuracy": 0.85, "test accuracy": 0.83})
    assert bad.endswith("the chapter's bar is NOT met.") and "train loss 0.6200 < 0.5 (NO)" in bad
