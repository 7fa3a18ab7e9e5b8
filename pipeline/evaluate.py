"""DVC stage `evaluate`: score the models on the test split and crown the champion.

Scores scratch, concise and (with evaluate.baseline) the baseline. Writes
reports/eval/metrics.json (DVC metrics: test accuracy, mean loss and macro F1,
and validation accuracy, per model), reports/eval/per_class.csv (precision /
recall / F1 per class), reports/eval/confusion/<model>.csv (actual vs
predicted class: DVC's confusion plot), reports/eval/confusion_png/<model>.png
(counts in the cells), reports/eval/worked.json (the chapter's worked
examples, computed with the scratch model on the test split) and the
calibration of each model's probabilities on the test split: ECE, MCE and
the Brier score in metrics.json with the temperature fitted on the validation
split and the ECE it leaves, reports/eval/reliability/<model>.csv (DVC's
reliability plot) and reports/eval/reliability_png/<model>.png.

Logs the test metrics, per-class metrics (one-vs-rest ECE among them), the
confusion matrix and the reliability diagram into each model's MLflow run, found in the current store by the model file's SHA-256
(tag model_sha256) and created from the model file where the store has none;
the metrics also on the run's classifier (the pyfunc that predicts classes,
logged by the train stage). Registers the classifier of the model with the
best validation accuracy as a version of <tracking.registered_model> and
moves the alias @champion to it only if it beats the current champion; the version carries its
temperature (tag ``temperature``: `fmnist-predict --calibrated`). The outputs are
renamed into place together after the runs are logged, and the registry is
touched only after that: an evaluate that fails changes neither.
"""

import logging

import click
import mlflow
import numpy as np
import pandas as pd
import torch

from pipeline import paths
from pipeline._cli import load_stage_params, params_option, stage_main, verbose_option
from pipeline.stage_runs import open_experiment, run_tags_for
from softmax_regression import CLASS_NAMES
from softmax_regression.atomic import StagedOutputs
from softmax_regression.data.splits import Split, input_example, load_split
from softmax_regression.evaluation import accuracy
from softmax_regression.evaluation.calibration import Calibration, calibrate, reliability_csv
from softmax_regression.evaluation.metrics import (
    Evaluation,
    best_by_validation,
    evaluate_probabilities,
    per_class_csv,
    predictions_csv,
)
from softmax_regression.evaluation.worked import worked_examples
from softmax_regression.models import CHAPTER_KINDS, MODEL_KINDS
from softmax_regression.models.file import LoadedModel, load_model
from softmax_regression.reporting.evaluation_figures import confusion_matrix_figure, reliability_figure
from softmax_regression.reporting.png import figure_png_bytes
from softmax_regression.tracking.model_runs import ModelRun, model_run
from softmax_regression.tracking.registry import register_and_promote
from softmax_regression.tracking.runs import log_bytes, log_table

log = logging.getLogger(__name__)

PARAMS = ("evaluate", "data.val_size", "tracking")


def probabilities_on(model: LoadedModel, split: Split) -> np.ndarray:
    return model.predict_proba(torch.from_numpy(split.images)).numpy()


def reliability_png(name: str, c: Calibration) -> bytes:
    return figure_png_bytes(reliability_figure(
        c.reliability, c.calibrated, f"{name}: reliability on the test set ({c.bins} bins; T = {c.temperature:.3f})"))


def confusion_png(e: Evaluation) -> bytes:
    return figure_png_bytes(confusion_matrix_figure(
        e.confusion, CLASS_NAMES, f"{e.name}: confusion matrix on the test set (accuracy {e.accuracy:.4f})"),
        crop=False)


def metric_name(class_name: str) -> str:
    return class_name.replace(" ", "_").replace("-", "_")


def log_evaluation(run: ModelRun, e: Evaluation, c: Calibration, val_accuracy: float, figure: bytes,
                   reliability: bytes) -> None:
    """Test metrics, calibration, per-class metrics, the confusion and reliability figures and the confusion
    table, into the model's run; the metrics also on the run's classifier, where it has one. Each call names
    the run: the run is not started again, so it stays FINISHED, with its training's end time, and another
    evaluate of the same model file (a sweep's baseline) finds it meanwhile."""
    run_id, model_id = run.run_id, run.classifier_id
    mlflow.log_metrics({**e.summary(), **c.summary(), "val_accuracy": val_accuracy}, run_id=run_id,
                       model_id=model_id)
    per_class = {f"test_{metric}_{metric_name(row['class'])}": row[metric]
                 for row in e.per_class_rows() for metric in ("precision", "recall", "f1")}
    per_class.update({f"test_ece_{metric_name(name)}": round(float(ece), 6)
                      for name, ece in zip(CLASS_NAMES, c.per_class_ece)})
    mlflow.log_metrics(per_class, run_id=run_id, model_id=model_id)
    log_bytes(figure, "figures/confusion_matrix.png", run_id)
    log_bytes(reliability, "figures/reliability.png", run_id)
    log_table(pd.DataFrame(e.confusion, index=list(CLASS_NAMES), columns=list(CLASS_NAMES))
              .rename_axis("true").reset_index(), "confusion_matrix.json", run_id)
    mlflow.log_text(per_class_csv([e]), "per_class.csv", run_id=run_id)


@click.command(help=__doc__)
@params_option
@verbose_option
@stage_main("evaluate")
def main(params_path: str) -> None:
    params = load_stage_params(params_path, PARAMS)
    torch.set_num_threads(1)  # the same bytes on every machine, as in training
    experiment_id = open_experiment(params["tracking"]["experiment"])
    kinds = MODEL_KINDS if params["evaluate"]["baseline"] else CHAPTER_KINDS
    if params["data"]["val_size"] == 0:  # make_splits: the chapter's setup
        log.warning("data.val_size is 0: the test split stands in for validation, so the temperature is fitted "
                    "and the champion chosen on the test split, and the calibrated test ECE flatters the models")
    test = load_split(paths.PROCESSED_DIR, "test")
    val = load_split(paths.PROCESSED_DIR, "val")
    models = {kind: load_model(paths.model_path(kind)) for kind in kinds}

    test_probabilities = {kind: probabilities_on(model, test) for kind, model in models.items()}
    val_probabilities = {kind: probabilities_on(model, val) for kind, model in models.items()}
    evaluations = [evaluate_probabilities(kind, test_probabilities[kind], test.labels) for kind in models]
    val_accuracy = {kind: round(accuracy(val_probabilities[kind], val.labels), 6) for kind in models}
    calibrations = {kind: calibrate(test_probabilities[kind], test.labels, val_probabilities[kind], val.labels,
                                    params["evaluate"]["calibration_bins"]) for kind in models}
    figures = {e.name: confusion_png(e) for e in evaluations}
    reliability_pngs = {kind: reliability_png(kind, c) for kind, c in calibrations.items()}
    scratch = models["scratch"]
    worked = worked_examples(scratch.W, scratch.b, test.images, test.labels,
                             standardization=scratch.standardization)

    runs = {kind: model_run(experiment_id, kind, paths.model_path(kind), input_example(test.images),
                            run_tags_for(kind, params_path)) for kind in kinds}
    with StagedOutputs() as outputs:
        tables, pngs = outputs.directory(paths.CONFUSION_DIR), outputs.directory(paths.CONFUSION_PNG_DIR)
        bins, diagrams = outputs.directory(paths.RELIABILITY_DIR), outputs.directory(paths.RELIABILITY_PNG_DIR)
        for e in evaluations:
            (tables / f"{e.name}.csv").write_text(predictions_csv(e, test.labels))
            (pngs / f"{e.name}.png").write_bytes(figures[e.name])
            (bins / f"{e.name}.csv").write_text(reliability_csv(calibrations[e.name]))
            (diagrams / f"{e.name}.png").write_bytes(reliability_pngs[e.name])
        outputs.write_text(paths.PER_CLASS_CSV, per_class_csv(evaluations))
        outputs.write_json(paths.EVAL_METRICS, {e.name: {**e.summary(), **calibrations[e.name].summary(),
                                                         "val_accuracy": val_accuracy[e.name]}
                                                for e in evaluations})
        outputs.write_json(paths.WORKED_JSON, worked)
        for e in evaluations:
            log_evaluation(runs[e.name], e, calibrations[e.name], val_accuracy[e.name], figures[e.name],
                           reliability_pngs[e.name])
        outputs.commit()
    for e in evaluations:
        c = calibrations[e.name]
        log.info("%s: test accuracy %.4f, loss %.4f, macro F1 %.4f, ECE %.4f (%.4f at T = %.3f); val accuracy %.4f",
                 e.name, e.accuracy, e.loss, float(e.f1.mean()), c.ece, c.calibrated.ece(), c.temperature,
                 val_accuracy[e.name])
    # What others see of this stage (a new registered version, the champion alias) comes last, once
    # the outputs are in place.
    best = best_by_validation(val_accuracy)
    register_and_promote(runs[best], input_example(test.images), params["tracking"]["registered_model"],
                         val_accuracy[best], calibrations[best].temperature)


if __name__ == "__main__":
    main()
