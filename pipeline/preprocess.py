"""DVC stage `preprocess`: flatten the images, split off a stratified validation set, draw a preview."""

import logging

import click

from softmax_regression import CLASS_NAMES
from softmax_regression.atomic import write_json
from softmax_regression.dataset import SIDE, load_raw, make_splits, save_splits, split_stats
from softmax_regression.params import load_params
from softmax_regression.plots import image_grid_figure, save_figure

from . import paths
from ._cli import params_option, stage_main

log = logging.getLogger(__name__)


@click.command(help=__doc__ + "\n\nWrites data/processed/{train,val,test}_{images,labels}.npy "
               "(uint8, one row of r*r pixels per image), reports/data/stats.json and "
               "reports/data/preview.png.")
@params_option
@stage_main("preprocess")
def main(params_path: str) -> None:
    data = load_params(params_path)["data"]
    side = data["resize"] or SIDE
    train, test = load_raw(paths.RAW_DIR)
    splits = make_splits(train, test, val_size=data["val_size"], seed=data["seed"], side=side)
    stats = split_stats(splits, side)
    preview = splits["train"]
    figure = image_grid_figure(
        preview.images[:18], [CLASS_NAMES[y] for y in preview.labels[:18]], rows=2, cols=9,
        suptitle=f"Fashion-MNIST training images ({side}x{side}) with their labels",
    )
    save_splits(paths.PROCESSED_DIR, splits, side)
    write_json(paths.STATS_JSON, stats)
    save_figure(figure, paths.PREVIEW_PNG)
    log.info("splits: %s", ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


if __name__ == "__main__":
    main()
