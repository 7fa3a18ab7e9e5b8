"""The body of the two chapter train stages, `train_scratch` and `train_concise`: each stage module builds
its own model and hands it here, so each stage imports its own model's code and not the other's.

Writes models/<model>.pt (weights, class names, input shape, preprocessing and
the train.* params that shaped them), reports/train/<model>_history.csv
(per-epoch train loss, train accuracy and validation accuracy; a DVC plot)
and reports/train/<model>_curves.png. Logs an MLflow run named after the
model (and the DVC experiment), starting when the training did: params,
per-epoch metrics, the training time, the curves, the model file, the model,
and the tag model_sha256 by which the evaluate and report stages find the
run. The training itself is ``training.fit.fit``, the function every tuning
trial runs.

The three outputs are written to temporaries first and renamed into place
together, inside the MLflow run: a failure anywhere (a full disk, a store
error, SIGINT or SIGTERM) leaves the previous ones as they were and the run
FAILED or KILLED, never RUNNING.
"""

from __future__ import annotations

import logging
import time

import click
import mlflow

from pipeline import paths
from pipeline._cli import load_stage_params, params_option, stage_main, verbose_option
from pipeline.stage_runs import new_model_run, open_experiment
from softmax_regression.atomic import StagedOutputs
from softmax_regression.data.splits import image_side, input_example, load_split
from softmax_regression.models.file import model_bytes
from softmax_regression.params import SHAPING, flatten_params, shaping_record
from softmax_regression.reporting.curves import training_curves_figure
from softmax_regression.reporting.png import figure_png_bytes
from softmax_regression.tracking.logged_models import log_model_file
from softmax_regression.tracking.runs import TRAINING_SECONDS, log_bytes, log_epochs
from softmax_regression.training.fit import Model, fit
from softmax_regression.training.history import history_csv
from softmax_regression.training.loop import resolve_device

log = logging.getLogger(__name__)

PARAMS = ("train", "data.normalize", "tracking.experiment")


def chapter_stage(kind: str, build: Model, doc: str) -> click.Command:
    """The stage command that trains the ``kind`` model ``build`` makes."""

    @click.command(help=doc)
    @params_option
    @verbose_option
    @click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
    @stage_main(f"train_{kind}")
    def main(params_path: str, no_progress: bool) -> None:
        params = load_stage_params(params_path, PARAMS)
        device = resolve_device(params["train"]["device"])
        if device.type != "cpu":
            log.warning("training on %s: a GPU computes other bits than dvc.lock holds; "
                        "`python -m pipeline.ci.reproduce_check` says whether they are within tolerance", device)
        experiment_id = open_experiment(params["tracking"]["experiment"])
        side = image_side(paths.PROCESSED_DIR)
        train_split = load_split(paths.PROCESSED_DIR, "train")
        val_split = load_split(paths.PROCESSED_DIR, "val")
        logged = flatten_params(params, ("train", "data"))  # the run's params

        started = time.time()
        fitted = fit(build, train_split, val_split, params["train"], params["data"]["normalize"], kind,
                     progress=not no_progress)
        checkpoint = model_bytes(kind, fitted.W, fitted.b, side, shaping_record({key: logged[key] for key in SHAPING}),
                                 fitted.standardization)
        history_text = history_csv(fitted.history)
        curves_png = figure_png_bytes(training_curves_figure(
            {kind: fitted.history}, title=f"Softmax regression ({kind}): training curves"))
        with StagedOutputs() as outputs:
            outputs.write_bytes(paths.model_path(kind), checkpoint)
            outputs.write_text(paths.history_path(kind), history_text)
            outputs.write_bytes(paths.curves_path(kind), curves_png)
            with new_model_run(experiment_id, kind, params_path, checkpoint, started) as run:
                mlflow.log_params(logged)
                log_epochs(fitted.history, fitted.lrs)
                mlflow.log_metric(TRAINING_SECONDS, fitted.seconds)
                log_bytes(curves_png, "figures/training_curves.png")
                mlflow.log_text(history_text, "history.csv")
                log_model_file(kind, checkpoint, input_example(val_split.images))
                outputs.commit()
        last = fitted.history[-1]
        log.info("%s: train loss %.4f, train acc %.4f, val acc %.4f after %d epochs in %.1f s; MLflow run %s",
                 kind, last.train_loss, last.train_acc, last.val_acc, last.epoch, fitted.seconds, run.info.run_id)

    return main
