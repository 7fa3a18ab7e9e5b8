"""DVC stages `train_scratch` and `train_concise`: softmax regression trained on the training split.

Writes models/<model>.pt (weights, class names, input shape, preprocessing and
the train.* params that shaped them), reports/train/<model>_history.csv
(per-epoch train loss, train accuracy and validation accuracy; a DVC plot)
and reports/train/<model>_curves.png. Logs an MLflow run named after the
model: params, per-epoch metrics, the curves, the model file, the model, and
the tag model_sha256 by which the evaluate and report stages find the run.

The three outputs are written to temporaries first and renamed into place
together, at the end of the MLflow run: a failure anywhere (a full disk, a
store error, SIGINT or SIGTERM) leaves the previous ones as they were and
the run FAILED or KILLED, never RUNNING.
"""

import logging

import click
import mlflow
import torch

from softmax_regression import CHAPTER_KINDS, tracking
from softmax_regression.batches import ShuffledBatches, to_labels
from softmax_regression.dataset import image_side, load_split
from softmax_regression.features import Standardization, features
from softmax_regression.history import history_csv
from softmax_regression.models import build_model, initial_weights, model_bytes, resolve_device
from softmax_regression.params import SHAPING, flatten_params, shaping_record
from softmax_regression.plots import figure_png_bytes, training_curves_figure
from softmax_regression.training import learning_rates, train

from . import paths
from ._cli import load_stage_params, params_option, run_and_exit, stage_main, verbose_option
from .mlflow_runs import open_experiment
from .model_runs import training_run

log = logging.getLogger(__name__)

PARAMS = ("train", "data.normalize", "tracking.experiment")


@click.command(help=__doc__)
@click.option("--model", "kind", type=click.Choice(CHAPTER_KINDS), required=True, help="Which implementation to train.")
@params_option
@verbose_option
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@stage_main("train")
def main(kind: str, params_path: str, no_progress: bool) -> None:
    params = load_stage_params(params_path, PARAMS)
    cfg = params["train"]
    device = resolve_device(cfg["device"])
    if device.type != "cpu":
        log.warning("training on %s: a GPU computes other bits than dvc.lock holds; "
                    "`python -m pipeline.reproduce_check` says whether they are within tolerance", device)
    # One CPU thread: a multi-threaded matrix product may split its sums differently from run to run,
    # and does by design on a machine with more cores; the weights must be the same bytes everywhere.
    torch.set_num_threads(1)
    experiment_id = open_experiment(params["tracking"]["experiment"])
    side = image_side(paths.PROCESSED_DIR)
    train_split = load_split(paths.PROCESSED_DIR, "train")
    val_split = load_split(paths.PROCESSED_DIR, "val")

    standardization = Standardization.fit(train_split.images, params["data"]["normalize"])  # training split only
    generator = torch.Generator().manual_seed(cfg["seed"])
    W = initial_weights(side * side, 10, cfg["init_std"], generator).to(device)
    model = build_model(kind, W, lr=cfg["lr"], weight_decay=cfg["weight_decay"], loss=cfg["loss"])
    batches = ShuffledBatches(train_split.images, train_split.labels, cfg["batch_size"], generator, device,
                              standardization)
    lrs = learning_rates(cfg["lr"], cfg["epochs"], cfg["schedule"])
    history = train(model, batches, features(val_split.images, standardization, device),
                    to_labels(val_split.labels, device), epochs=cfg["epochs"], progress=not no_progress, lrs=lrs)

    logged = flatten_params(params, ("train", "data"))  # the run's params
    checkpoint = model_bytes(model, side, shaping_record({key: logged[key] for key in SHAPING}), standardization)
    history_text = history_csv(history)
    curves_png = figure_png_bytes(training_curves_figure(
        {kind: history}, title=f"Softmax regression ({kind}): training curves"))

    files = {paths.history_path(kind): history_text, paths.curves_path(kind): curves_png}
    with training_run(experiment_id, kind, params_path, model, checkpoint, standardization, val_split.images,
                      files) as run:
        mlflow.log_params(logged)
        tracking.log_metric_steps((record.epoch, {"train_loss": record.train_loss, "train_acc": record.train_acc,
                                                  "val_acc": record.val_acc, "lr": lr})
                                  for record, lr in zip(history, lrs))
        tracking.log_bytes(curves_png, "figures/training_curves.png")
        mlflow.log_text(history_text, "history.csv")
    last = history[-1]
    log.info("%s: train loss %.4f, train acc %.4f, val acc %.4f after %d epochs; MLflow run %s",
             kind, last.train_loss, last.train_acc, last.val_acc, last.epoch, run.info.run_id)


if __name__ == "__main__":
    run_and_exit(main)
