"""DVC stage `evaluate`: score both models (and a scikit-learn baseline) on the test split.

Writes reports/eval/metrics.json (DVC metrics: accuracy, mean loss and macro
F1 per model), reports/eval/per_class.csv (precision / recall / F1 per class),
reports/eval/confusion/<model>.csv (actual vs predicted class: DVC's
confusion plot) and reports/eval/confusion_png/<model>.png (counts in the cells).
The baseline is scored only with evaluate.baseline: true.

Logs the test metrics, per-class metrics and confusion matrix into each
model's MLflow run (from models/<model>_run.json), creates a run for the
baseline, and registers the model with the better validation accuracy as
<tracking.registered_model>@champion (a pyfunc that predicts classes).
"""

import logging

import click
import mlflow
import pandas as pd
import torch

from softmax_regression import CLASS_NAMES, tracking
from softmax_regression.atomic import atomic_dir, write_json, write_text
from softmax_regression.baseline import baseline_probabilities, fit_logistic_regression
from softmax_regression.dataset import load_split, split_files
from softmax_regression.metrics import (
    Evaluation, best_by_validation, evaluate_probabilities, per_class_csv, predictions_csv,
)
from softmax_regression.mlflow_models import log_and_register_classifier
from softmax_regression.models import MODEL_KINDS, load_model
from softmax_regression.params import flatten_params, load_params
from softmax_regression.plots import confusion_matrix_figure, figure_png_bytes
from softmax_regression.training import read_history_csv

from . import paths
from ._cli import params_option, stage_main

log = logging.getLogger(__name__)


def log_evaluation(e: Evaluation, confusion_png: bytes) -> None:
    """Test metrics, per-class metrics, the confusion figure and its table, into the active run."""
    mlflow.log_metrics(e.summary())
    mlflow.log_metrics({f"test_{metric}_{row['class'].replace(' ', '_').replace('-', '_')}": row[metric]
                        for row in e.per_class_rows() for metric in ("precision", "recall", "f1")})
    tracking.log_bytes(confusion_png, "figures/confusion_matrix.png")
    mlflow.log_table(pd.DataFrame(e.confusion, index=list(CLASS_NAMES), columns=list(CLASS_NAMES))
                     .rename_axis("true").reset_index(), artifact_file="confusion_matrix.json")
    mlflow.log_text(per_class_csv([e]), "per_class.csv")


@click.command(help=__doc__)
@params_option
@stage_main("evaluate")
def main(params_path: str) -> None:
    params = load_params(params_path)
    cfg = params["evaluate"]
    tracking.configure()
    runs = {kind: tracking.RunInfo.read(paths.run_info_json(kind)) for kind in MODEL_KINDS}
    val_accuracy = {kind: read_history_csv(paths.history_csv(kind).read_text())[-1].val_acc for kind in MODEL_KINDS}
    test = load_split(paths.PROCESSED_DIR, "test")
    models = {kind: load_model(paths.model_path(kind)) for kind in MODEL_KINDS}
    evaluations = [
        evaluate_probabilities(kind, model.predict_proba(torch.from_numpy(test.images)).numpy(), test.labels)
        for kind, model in models.items()
    ]
    if cfg["baseline"]:
        train = load_split(paths.PROCESSED_DIR, "train")
        baseline = fit_logistic_regression(train.images, train.labels, C=cfg["baseline_C"],
                                           max_iter=cfg["baseline_max_iter"])
        evaluations.append(evaluate_probabilities("baseline", baseline_probabilities(baseline, test.images),
                                                  test.labels))

    figures = {e.name: figure_png_bytes(confusion_matrix_figure(
        e.confusion, CLASS_NAMES, f"{e.name}: confusion matrix on the test set (accuracy {e.accuracy:.4f})"))
        for e in evaluations}

    for e in evaluations:
        if e.name in runs:
            with mlflow.start_run(run_id=runs[e.name].run_id):
                log_evaluation(e, figures[e.name])
        else:
            tags = tracking.standard_tags(e.name, params_path,
                                          tracking.files_digest(split_files(paths.PROCESSED_DIR)))
            experiment_id = tracking.experiment_id(params["tracking"]["experiment"])
            with mlflow.start_run(experiment_id=experiment_id, run_name=e.name, tags=tags):
                mlflow.log_params(flatten_params(params, ("data", "evaluate")))
                log_evaluation(e, figures[e.name])
    champion = best_by_validation(val_accuracy)
    log_and_register_classifier(paths.model_path(champion).read_bytes(), test.images[:5].astype("float32") / 255,
                                params["tracking"]["registered_model"], runs[champion].run_id)
    with mlflow.start_run(run_id=runs[champion].run_id):
        mlflow.set_tag("champion", "true")

    with atomic_dir(paths.CONFUSION_DIR) as tables, atomic_dir(paths.CONFUSION_PNG_DIR) as pngs:
        for e in evaluations:
            (tables / f"{e.name}.csv").write_text(predictions_csv(e, test.labels))
            (pngs / f"{e.name}.png").write_bytes(figures[e.name])
    write_text(paths.PER_CLASS_CSV, per_class_csv(evaluations))
    write_json(paths.EVAL_METRICS, {e.name: e.summary() for e in evaluations})
    for e in evaluations:
        log.info("%s: test accuracy %.4f, loss %.4f, macro F1 %.4f", e.name, e.accuracy, e.loss, float(e.f1.mean()))


if __name__ == "__main__":
    main()
