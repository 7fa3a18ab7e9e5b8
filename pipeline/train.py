"""DVC stages `train_scratch` and `train_concise`: softmax regression trained on the training split.

Writes models/<model>.pt (weights, class names, input shape, preprocessing),
reports/train/<model>_history.csv (per-epoch train loss, train accuracy and
validation accuracy; a DVC plot) and reports/train/<model>_curves.png.
"""

import logging

import click
import torch

from softmax_regression.atomic import write_text
from softmax_regression.dataset import image_side, load_split
from softmax_regression.models import MODEL_KINDS, build_model, initial_weights, resolve_device, save_model
from softmax_regression.params import flatten_params, load_params
from softmax_regression.plots import save_figure, training_curves_figure
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
    side = image_side(paths.PROCESSED_DIR)
    train_split = load_split(paths.PROCESSED_DIR, "train")
    val_split = load_split(paths.PROCESSED_DIR, "val")

    generator = torch.Generator().manual_seed(cfg["seed"])
    W = initial_weights(side * side, 10, cfg["init_std"], generator).to(device)
    model = build_model(kind, W, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    batches = ShuffledBatches(train_split.images, train_split.labels, cfg["batch_size"], generator, device)
    history = train(model, batches, to_features(val_split.images, device), to_labels(val_split.labels, device),
                    epochs=cfg["epochs"], progress=not no_progress)

    save_model(paths.model_path(kind), model, side, flatten_params(params, ("data", "train")))
    write_text(paths.history_csv(kind), history_csv(history))
    save_figure(training_curves_figure({kind: history}, title=f"Softmax regression ({kind}): training curves"),
                paths.curves_png(kind))
    last = history[-1]
    log.info("%s: train loss %.4f, train acc %.4f, val acc %.4f after %d epochs",
             kind, last.train_loss, last.train_acc, last.val_acc, last.epoch)


if __name__ == "__main__":
    main()
