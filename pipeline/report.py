"""DVC stage `report`: the chapter's prediction step, grown into one page a person opens.

Writes reports/report/report.html (self-contained: every image embedded, the
confusion matrices and reliability diagrams evaluate drew among them),
reports/report/summary.md, and in reports/report/figures/ the figures this
stage draws: predictions on the first test images, the most confident
mistakes, both models' training curves, per-class F1 and the chapter's
regression-loss figure.

Logs the page into each scored model's MLflow run, found in the current store
by the model file's SHA-256 (and created from the model file where the store
has none).
"""

import json
import logging
from dataclasses import dataclass

import click
import mlflow
import numpy as np

from pipeline import paths
from pipeline._cli import load_stage_params, params_option, stage_main, verbose_option
from pipeline.stage_runs import open_experiment, run_tags_for
from softmax_regression import CLASS_NAMES
from softmax_regression.atomic import StagedOutputs
from softmax_regression.data.splits import Split, input_example, load_split, validation_split_name
from softmax_regression.evaluation.calibration import read_reliability_csv, verdict
from softmax_regression.evaluation.metrics import (
    best_by_validation,
    most_confident_mistakes,
    read_per_class_csv,
    read_predictions_csv,
    read_scores_json,
)
from softmax_regression.models import CHAPTER_KINDS
from softmax_regression.reporting.curves import training_curves_figure
from softmax_regression.reporting.images import grid_shape, image_grid_figure
from softmax_regression.reporting.page import report_page, worked_html
from softmax_regression.reporting.page_figures import loss_functions_figure, per_class_f1_figure
from softmax_regression.reporting.png import figure_png_bytes
from softmax_regression.tracking.model_runs import model_run
from softmax_regression.training.history import EpochRecord, read_history_csv

log = logging.getLogger(__name__)

PARAMS = ("report", "data.val_size", "tracking.experiment")
INTRO = ("The <i>Dive into Deep Learning</i> chapter on softmax regression, from scratch and concise, "
         "reproduced by a DVC pipeline.")


@dataclass
class ReportInputs:
    """The test split and what the train and evaluate stages wrote about it."""

    test: Split
    histories: dict[str, list[EpochRecord]]
    metrics: dict[str, dict]
    """evaluate's scores of each model, with each of the chapter's models' last train loss."""
    per_class: list[dict]
    worked: str
    """The chapter's worked examples, as HTML."""
    best: str
    """The model with the best validation accuracy, whose predictions the report shows."""
    predicted: np.ndarray
    confidence: np.ndarray
    confusion_pngs: dict[str, bytes]
    preview_png: bytes
    calibration: dict[str, tuple[bytes, str]]
    """Each model's reliability diagram and the sentence saying what it shows."""
    validation: str
    """The split that picked the best model and fitted the temperatures (:func:`validation_split_name`)."""


def read_inputs(val_size: int) -> ReportInputs:
    validation = validation_split_name(val_size)
    test = load_split(paths.PROCESSED_DIR, "test")
    histories = {k: paths.read_output(paths.history_path(k), read_history_csv, f"train_{k}") for k in CHAPTER_KINDS}
    metrics = paths.read_output(paths.EVAL_METRICS, read_scores_json, "evaluate")
    for kind, history in histories.items():
        metrics[kind] = {**metrics[kind], "train_loss": history[-1].train_loss}
    best = best_by_validation({name: values["val_accuracy"] for name, values in metrics.items()})
    images = len(test.labels)
    predicted, confidence = paths.read_output(paths.CONFUSION_DIR / f"{best}.csv",
                                              lambda text: read_predictions_csv(text, images), "evaluate")
    return ReportInputs(
        test=test,
        histories=histories,
        metrics=metrics,
        per_class=paths.read_output(paths.PER_CLASS_CSV, lambda text: read_per_class_csv(text, metrics), "evaluate"),
        worked=paths.read_output(paths.WORKED_JSON, lambda text: worked_html(json.loads(text)), "evaluate"),
        best=best, predicted=predicted, confidence=confidence,
        confusion_pngs={name: (paths.CONFUSION_PNG_DIR / f"{name}.png").read_bytes() for name in metrics},
        preview_png=paths.PREVIEW_PNG.read_bytes(),
        calibration={name: ((paths.RELIABILITY_PNG_DIR / f"{name}.png").read_bytes(), verdict(
            name, *paths.read_output(paths.RELIABILITY_DIR / f"{name}.csv",
                                     lambda text: read_reliability_csv(text, images), "evaluate"),
            values["temperature"], validation)) for name, values in metrics.items()},
        validation=validation,
    )


def draw_figures(inputs: ReportInputs, n_images: int, n_mistakes: int) -> dict[str, bytes]:
    """The report's figures by file name: the best model's predictions and most confident mistakes, both
    models' training curves, per-class F1 and the chapter's loss functions."""
    test, best, predicted, confidence = inputs.test, inputs.best, inputs.predicted, inputs.confidence
    true_names = [CLASS_NAMES[y] for y in test.labels]
    pred_names = [CLASS_NAMES[p] for p in predicted]
    shown = range(n_images)
    wrong = most_confident_mistakes(predicted, confidence, test.labels, n_mistakes)
    return {
        "predictions.png": figure_png_bytes(image_grid_figure(
            test.images[:n_images], [f"{true_names[i]}\n{pred_names[i]}" for i in shown], *grid_shape(n_images),
            suptitle=f"First {n_images} test images: true label (top) and the {best} model's prediction "
                     "(bottom, red if wrong)",
            title_colors=["black" if true_names[i] == pred_names[i] else "red" for i in shown],
        )),
        "mistakes.png": figure_png_bytes(image_grid_figure(
            test.images[wrong], [f"true {true_names[i]}\npred {pred_names[i]} ({confidence[i]:.2f})" for i in wrong],
            *grid_shape(len(wrong)), title_colors=["red"] * len(wrong), scale=2.0,
            suptitle=f"The {best} model's {len(wrong)} most confident mistakes on the test set",
        )),
        "training_curves.png": figure_png_bytes(training_curves_figure(
            inputs.histories, title="Training curves: scratch (solid) and concise (dashed)")),
        "per_class_f1.png": figure_png_bytes(per_class_f1_figure(inputs.per_class, CLASS_NAMES)),
        "loss_functions.png": figure_png_bytes(loss_functions_figure()),
    }


@click.command(help=__doc__)
@params_option
@verbose_option
@stage_main("report")
def main(params_path: str) -> None:
    params = load_stage_params(params_path, PARAMS)
    cfg = params["report"]
    experiment_id = open_experiment(params["tracking"]["experiment"])
    inputs = read_inputs(params["data"]["val_size"])

    figures = draw_figures(inputs, cfg["n_images"], cfg["n_mistakes"])
    page, summary = report_page(INTRO, inputs.metrics, inputs.histories, inputs.best, inputs.per_class,
                                inputs.worked, figures, inputs.confusion_pngs, inputs.preview_png,
                                inputs.calibration, inputs.validation)

    with StagedOutputs() as outputs:
        folder = outputs.directory(paths.REPORT_DIR)
        (folder / "figures").mkdir()
        for name, png in figures.items():
            (folder / "figures" / name).write_bytes(png)
        (folder / "report.html").write_text(page)
        (folder / "summary.md").write_text(summary)
        for kind in inputs.metrics:
            run = model_run(experiment_id, kind, paths.model_path(kind), input_example(inputs.test.images),
                            run_tags_for(kind, params_path))
            mlflow.log_text(page, "report/report.html", run_id=run.run_id)  # the run stays FINISHED
            mlflow.log_text(summary, "report/summary.md", run_id=run.run_id)
        outputs.commit()
    log.info("wrote %s (%d KB)", paths.REPORT_HTML, len(page) // 1024)


if __name__ == "__main__":
    main()
