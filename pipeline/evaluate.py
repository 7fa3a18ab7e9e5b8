"""DVC stage `evaluate`: score the models on the test split and crown the champion.

Scores scratch, concise and (with evaluate.baseline) the baseline. Writes
reports/eval/metrics.json (DVC metrics: test accuracy, mean loss and macro F1,
and validation accuracy, per model), reports/eval/per_class.csv (precision /
recall / F1 per class), reports/eval/confusion/<model>.csv (actual vs
predicted class: DVC's confusion plot) and reports/eval/confusion_png/<model>.png
(counts in the cells) and reports/eval/worked.json (the chapter's worked
examples, computed with the scratch model on the test split).

Logs the test metrics, per-class metrics and confusion matrix into each
model's MLflow run, found in the current store by the model file's SHA-256
(tag model_sha256) and created from the model file where the store has none;
the metrics also on the run's classifier (the pyfunc that predicts classes,
logged by the train stage). Registers the classifier of the model with the
best validation accuracy as a version of <tracking.registered_model> and
moves the alias @champion to it only if it beats the current champion. The outputs are
renamed into place together after the runs are logged, and the registry is
touched only after that: an evaluate that fails changes neither.
"""

import logging

import click
import mlflow
import pandas as pd
import torch

from softmax_regression import CHAPTER_KINDS, CLASS_NAMES, MODEL_KINDS, tracking
from softmax_regression.atomic import StagedOutputs
from softmax_regression.dataset import Split, load_split
from softmax_regression.metrics import (
    Evaluation,
    best_by_validation,
    evaluate_probabilities,
    per_class_csv,
    predictions_csv,
)
from softmax_regression.models import LoadedModel, load_model
from softmax_regression.plots import confusion_matrix_figure, figure_png_bytes
from softmax_regression.worked import worked_examples

from . import paths
from ._cli import load_stage_params, params_option, run_and_exit, stage_main, verbose_option
from .mlflow_runs import open_experiment
from .model_runs import ModelRun, crown_champion, model_runs

log = logging.getLogger(__name__)

PARAMS = ("evaluate", "tracking")


def accuracy_on(model: LoadedModel, split: Split) -> float:
    predicted = model.predict_proba(torch.from_numpy(split.images)).argmax(dim=1).numpy()
    return round(float((predicted == split.labels).mean()), 6)


def confusion_png(e: Evaluation) -> bytes:
    return figure_png_bytes(confusion_matrix_figure(
        e.confusion, CLASS_NAMES, f"{e.name}: confusion matrix on the test set (accuracy {e.accuracy:.4f})"),
        crop=False)


def log_evaluation(run: ModelRun, e: Evaluation, val_accuracy: float, figure: bytes) -> None:
    """Test metrics, per-class metrics, the confusion figure and its table, into the model's run; the metrics
    also on the run's classifier, where it has one."""
    with tracking.tracked_run(run_id=run.run_id):
        mlflow.log_metrics({**e.summary(), "val_accuracy": val_accuracy}, model_id=run.classifier_id)
        mlflow.log_metrics({f"test_{metric}_{row['class'].replace(' ', '_').replace('-', '_')}": row[metric]
                            for row in e.per_class_rows() for metric in ("precision", "recall", "f1")},
                           model_id=run.classifier_id)
        tracking.log_bytes(figure, "figures/confusion_matrix.png")
        tracking.log_table(pd.DataFrame(e.confusion, index=list(CLASS_NAMES), columns=list(CLASS_NAMES))
                           .rename_axis("true").reset_index(), "confusion_matrix.json")
        mlflow.log_text(per_class_csv([e]), "per_class.csv")


@click.command(help=__doc__)
@params_option
@verbose_option
@stage_main("evaluate")
def main(params_path: str) -> None:
    params = load_stage_params(params_path, PARAMS)
    torch.set_num_threads(1)  # the same bytes on every machine, as in training
    experiment_id = open_experiment(params["tracking"]["experiment"])
    kinds = MODEL_KINDS if params["evaluate"]["baseline"] else CHAPTER_KINDS
    test = load_split(paths.PROCESSED_DIR, "test")
    val = load_split(paths.PROCESSED_DIR, "val")
    models = {kind: load_model(paths.model_path(kind)) for kind in kinds}

    evaluations = [evaluate_probabilities(kind, model.predict_proba(torch.from_numpy(test.images)).numpy(),
                                          test.labels)
                   for kind, model in models.items()]
    val_accuracy = {kind: accuracy_on(model, val) for kind, model in models.items()}
    figures = {e.name: confusion_png(e) for e in evaluations}
    scratch = models["scratch"]
    worked = worked_examples(*scratch.model.weights(), test.images, test.labels,
                             standardization=scratch.standardization)

    runs = model_runs(experiment_id, kinds, test.images, params_path)
    with StagedOutputs() as outputs:
        tables, pngs = outputs.directory(paths.CONFUSION_DIR), outputs.directory(paths.CONFUSION_PNG_DIR)
        for e in evaluations:
            (tables / f"{e.name}.csv").write_text(predictions_csv(e, test.labels))
            (pngs / f"{e.name}.png").write_bytes(figures[e.name])
        outputs.write_text(paths.PER_CLASS_CSV, per_class_csv(evaluations))
        outputs.write_json(paths.EVAL_METRICS, {e.name: {**e.summary(), "val_accuracy": val_accuracy[e.name]}
                                                for e in evaluations})
        outputs.write_json(paths.WORKED_JSON, worked)
        for e in evaluations:
            log_evaluation(runs[e.name], e, val_accuracy[e.name], figures[e.name])
        outputs.commit()
    for e in evaluations:
        log.info("%s: test accuracy %.4f, loss %.4f, macro F1 %.4f; val accuracy %.4f", e.name, e.accuracy, e.loss,
                 float(e.f1.mean()), val_accuracy[e.name])
    # What others see of this stage (a new registered version, the champion alias) comes last, once
    # the outputs are in place.
    best = best_by_validation(val_accuracy)
    crown_champion(runs[best], val_accuracy[best], params["tracking"]["registered_model"], test.images)


if __name__ == "__main__":
    run_and_exit(main)
