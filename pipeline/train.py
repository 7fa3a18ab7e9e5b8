"""DVC stages `train_scratch` and `train_concise`: softmax regression trained on the training split.

Writes models/<model>.pt (weights, class names, input shape, preprocessing),
models/<model>_run.json (the MLflow run, for the evaluate and report stages),
reports/train/<model>_history.csv (per-epoch train loss, train accuracy and
validation accuracy; a DVC plot) and reports/train/<model>_curves.png.
Logs params, per-epoch metrics, the curves and the model to MLflow.
"""

import logging

import click
import mlflow
import torch

from softmax_regression import tracking
from softmax_regression.atomic import write_bytes, write_text
from softmax_regression.dataset import image_side, load_split, split_files
from softmax_regression.mlflow_models import log_torch_model
from softmax_regression.models import MODEL_KINDS, build_model, initial_weights, model_bytes, resolve_device
from softmax_regression.params import flatten_params, load_params
from softmax_regression.plots import figure_png_bytes, training_curves_figure
from softmax_regression.training import ShuffledBatches, history_csv, to_features, to_labels, train

from . import paths
from ._cli import params_option, stage_main

log = logging.getLogger(__name__)


@click.command(help=__doc__)
@click.option("--model", "kind", type=click.Choice(MODEL_KINDS), required=True, help="Which implementation to train.")
@params_option
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@stage_main("train")
def main(kind: str, params_path: str, no_progress: bool) -> None:
    params = load_params(params_path)
    cfg = params["train"]
    device = resolve_device(cfg["device"])
    uri = tracking.configure()
    experiment_id = tracking.experiment_id(params["tracking"]["experiment"])
    side = image_side(paths.PROCESSED_DIR)
    train_split = load_split(paths.PROCESSED_DIR, "train")
    val_split = load_split(paths.PROCESSED_DIR, "val")

    generator = torch.Generator().manual_seed(cfg["seed"])
    W = initial_weights(side * side, 10, cfg["init_std"], generator).to(device)
    model = build_model(kind, W, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    batches = ShuffledBatches(train_split.images, train_split.labels, cfg["batch_size"], generator, device)
    history = train(model, batches, to_features(val_split.images, device), to_labels(val_split.labels, device),
                    epochs=cfg["epochs"], progress=not no_progress)

    checkpoint = model_bytes(model, side, flatten_params(params, ("data", "train")))
    history_text = history_csv(history)
    curves_png = figure_png_bytes(training_curves_figure(
        {kind: history}, title=f"Softmax regression ({kind}): training curves"))
    tags = tracking.standard_tags(kind, params_path, tracking.files_digest(split_files(paths.PROCESSED_DIR)))
    with mlflow.start_run(experiment_id=experiment_id, run_name=kind, tags=tags) as run:
        mlflow.log_params(flatten_params(params, ("data", "train", "tracking")))
        for record in history:
            mlflow.log_metrics({"train_loss": record.train_loss, "train_acc": record.train_acc,
                                "val_acc": record.val_acc}, step=record.epoch)
        tracking.log_bytes(curves_png, "figures/training_curves.png")
        mlflow.log_text(history_text, "history.csv")
        tracking.log_bytes(checkpoint, f"checkpoint/{kind}.pt")
        log_torch_model(model, val_split.images[:5].astype("float32") / 255)
    run_info = tracking.RunInfo(run.info.run_id, experiment_id, uri)

    write_bytes(paths.model_path(kind), checkpoint)
    write_text(paths.history_csv(kind), history_text)
    write_bytes(paths.curves_png(kind), curves_png)
    write_text(paths.run_info_json(kind), run_info.to_json())
    last = history[-1]
    log.info("%s: train loss %.4f, train acc %.4f, val acc %.4f after %d epochs; MLflow run %s",
             kind, last.train_loss, last.train_acc, last.val_acc, last.epoch, run.info.run_id)


if __name__ == "__main__":
    main()
