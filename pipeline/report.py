"""DVC stage `report`: the chapter's prediction step, grown into one page a person opens.

Writes reports/report/report.html (self-contained: every image embedded),
reports/report/summary.md and the figures beside them in reports/report/figures/:
predictions on the first test images, the most confident mistakes, both
models' training curves, the confusion matrices, per-class F1 and the
chapter's regression-loss figure.

Logs the page into each scored model's MLflow run, found in the current store
by the model file's SHA-256 (and created from the model file where the store
has none).
"""

import csv
import io
import json
import logging

import click
import mlflow
import numpy as np

from softmax_regression import CLASS_NAMES, MODEL_KINDS, SCORED_KINDS, tracking
from softmax_regression.atomic import StagedOutputs
from softmax_regression.dataset import load_split
from softmax_regression.history import read_history_csv
from softmax_regression.metrics import best_by_validation, most_confident_mistakes, read_predictions_csv
from softmax_regression.plots import (
    figure_png_bytes, image_grid_figure, loss_functions_figure, per_class_f1_figure, training_curves_figure,
)
from softmax_regression.report import (
    WORKED_INTRO, Section, chapter_bar, metrics_table_html, per_class_table_html, render_html, render_markdown,
    worked_html,
)

from . import paths
from ._cli import load_stage_params, params_option, run_and_exit, stage_main, verbose_option
from .mlflow_runs import open_experiment
from .model_runs import model_run_id

log = logging.getLogger(__name__)

PARAMS = ("report", "tracking.experiment")


def read_per_class(text: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(text)))
    for r in rows:
        for key in ("precision", "recall", "f1"):
            r[key] = float(r[key])
        r["support"] = int(r["support"])
    return rows


SCORES = ("test_accuracy", "val_accuracy")
"""What the report reads of each model in evaluate's ``metrics.json``."""


def read_scores(text: str) -> dict[str, dict]:
    """evaluate's ``metrics.json``: the scores of each scored model; both trained models must be there."""
    scored = json.loads(text)
    if not isinstance(scored, dict):
        raise ValueError(f"a mapping of models expected, not {type(scored).__name__}")
    missing = [kind for kind in MODEL_KINDS if kind not in scored]
    if missing:
        raise ValueError(f"no scores of {', '.join(missing)}")
    metrics = {name: scored[name] for name in SCORED_KINDS if name in scored}
    for name, values in metrics.items():
        if not isinstance(values, dict) or not all(isinstance(values.get(key), (int, float)) for key in SCORES):
            raise ValueError(f"{name} lacks {' or '.join(SCORES)}")
    return metrics


@click.command(help=__doc__)
@params_option
@verbose_option
@stage_main("report")
def main(params_path: str) -> None:
    params = load_stage_params(params_path, PARAMS)
    cfg = params["report"]
    experiment_id = open_experiment(params["tracking"]["experiment"])
    test = load_split(paths.PROCESSED_DIR, "test")
    histories = {k: paths.read_output(paths.history_csv(k), read_history_csv, "train") for k in MODEL_KINDS}
    metrics = paths.read_output(paths.EVAL_METRICS, read_scores, "evaluate")
    per_class = paths.read_output(paths.PER_CLASS_CSV, read_per_class, "evaluate")
    worked = paths.read_output(paths.WORKED_JSON, lambda text: worked_html(json.loads(text)), "evaluate")
    for kind, history in histories.items():
        metrics[kind] = {**metrics[kind], "train_loss": history[-1].train_loss}
    bar = [chapter_bar(kind, {"train loss": history[-1].train_loss, "train accuracy": history[-1].train_acc,
                              "test accuracy": metrics[kind]["test_accuracy"]})
           for kind, history in histories.items()]

    best = best_by_validation({name: values["val_accuracy"] for name, values in metrics.items()})
    predicted, confidence = paths.read_output(paths.CONFUSION_DIR / f"{best}.csv", read_predictions_csv,
                                              "evaluate")  # evaluate's scores

    n = cfg["n_images"]
    cols = min(n, 9)
    rows = -(-n // cols)
    true_names = [CLASS_NAMES[y] for y in test.labels]
    pred_names = [CLASS_NAMES[p] for p in predicted]
    predictions_png = figure_png_bytes(image_grid_figure(
        test.images[:n], [f"{t}\n{p}" for t, p in zip(true_names[:n], pred_names[:n])], rows, cols,
        suptitle=f"First {n} test images: true label (top) and the {best} model's prediction (bottom, red if wrong)",
        title_colors=["black" if t == p else "red" for t, p in zip(true_names[:n], pred_names[:n])],
    ))
    wrong = most_confident_mistakes(predicted, confidence, test.labels, cfg["n_mistakes"])
    mcols = min(len(wrong), 9) or 1
    mistakes_png = figure_png_bytes(image_grid_figure(
        test.images[wrong],
        [f"true {true_names[i]}\npred {pred_names[i]} ({confidence[i]:.2f})" for i in wrong],
        -(-len(wrong) // mcols), mcols, title_colors=["red"] * len(wrong), scale=2.0,
        suptitle=f"The {best} model's {len(wrong)} most confident mistakes on the test set",
    ))
    figures = {
        "predictions.png": predictions_png,
        "mistakes.png": mistakes_png,
        "training_curves.png": figure_png_bytes(training_curves_figure(
            histories, title="Training curves: scratch (solid) and concise (dashed)")),
        "per_class_f1.png": figure_png_bytes(per_class_f1_figure(per_class, CLASS_NAMES)),
        "loss_functions.png": figure_png_bytes(loss_functions_figure()),
    }
    confusion = {name: (paths.CONFUSION_PNG_DIR / f"{name}.png").read_bytes() for name in metrics}
    preview = paths.PREVIEW_PNG.read_bytes()

    title = "Softmax regression on Fashion-MNIST"
    notes = [
        f"Best model on the validation split: {best} (validation accuracy {metrics[best]['val_accuracy']:.4f}).",
        *bar,
    ]
    sections = [
        Section("Results on the test set", " ".join(notes), table_html=metrics_table_html(metrics)),
        Section("Predictions", "The chapter's predict_ch3: test images titled with the true and the "
                "predicted class.", [("predictions on the first test images", predictions_png)]),
        Section("Most confident mistakes", "Wrong predictions made with the highest probability: where "
                "the model is sure and wrong.", [("most confident mistakes", mistakes_png)]),
        Section("Training curves", "Per epoch: mean train loss, train accuracy, validation accuracy.",
                [("training curves of both models", figures["training_curves.png"])]),
        Section("Confusion matrices", "Rows: true class; columns: predicted class; counts in the cells.",
                [(f"{name} confusion matrix", png) for name, png in confusion.items()]),
        Section("Per-class precision, recall and F1", table_html=per_class_table_html(per_class),
                images=[("per-class F1", figures["per_class_f1.png"])]),
        Section("Loss functions", "The chapter's regression losses: L2, L1 and Huber's robust loss, with "
                "their derivatives and the likelihoods exp(-loss).",
                [("L2, L1 and Huber losses", figures["loss_functions.png"])]),
        Section("The chapter, worked", WORKED_INTRO, table_html=worked),
        Section("The data", "Training images with their text labels, as in the chapter.",
                [("Fashion-MNIST training images", preview)]),
    ]
    page = render_html(title, "The <i>Dive into Deep Learning</i> chapter on softmax regression, from scratch "
                       "and concise, reproduced by a DVC pipeline.", sections)
    summary = render_markdown(title, metrics, [(name, f"figures/{name}") for name in figures], notes)
    example = np.ascontiguousarray(test.images[:5], dtype=np.float32) / 255
    with StagedOutputs() as outputs:
        tmp = outputs.directory(paths.REPORT_DIR)
        (tmp / "figures").mkdir()
        for name, png in figures.items():
            (tmp / "figures" / name).write_bytes(png)
        (tmp / "report.html").write_text(page)
        (tmp / "summary.md").write_text(summary)
        for name in metrics:
            run_id = model_run_id(experiment_id, name, paths.model_path(name).read_bytes(), example, params_path)
            with tracking.tracked_run(run_id=run_id):
                mlflow.log_text(page, "report/report.html")
                mlflow.log_text(summary, "report/summary.md")
        outputs.commit()
    log.info("wrote %s (%d KB)", paths.REPORT_HTML, len(page) // 1024)

if __name__ == "__main__":
    run_and_exit(main)
