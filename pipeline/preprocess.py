"""DVC stage `preprocess`: flatten the images, split off a stratified validation set, draw a preview.

Logs an MLflow run named `data` (params data.*, split sizes, the preview and
the stats, the dataset checksum as a tag) and writes its id to
reports/data/data_run.json.
"""

import logging

import click
import mlflow

from softmax_regression import CLASS_NAMES, tracking
from softmax_regression.atomic import write_bytes, write_json, write_text
from softmax_regression.dataset import SIDE, load_raw, make_splits, save_splits, split_files, split_stats
from softmax_regression.params import flatten_params, load_params
from softmax_regression.plots import figure_png_bytes, image_grid_figure

from . import paths
from ._cli import params_option, stage_main

log = logging.getLogger(__name__)


@click.command(help=__doc__ + "\n\nWrites data/processed/{train,val,test}_{images,labels}.npy "
               "(uint8, one row of r*r pixels per image), reports/data/stats.json and "
               "reports/data/preview.png.")
@params_option
@stage_main("preprocess")
def main(params_path: str) -> None:
    params = load_params(params_path)
    data = params["data"]
    uri = tracking.configure()
    experiment_id = tracking.experiment_id(params["tracking"]["experiment"])
    side = data["resize"] or SIDE
    train, test = load_raw(paths.RAW_DIR)
    splits = make_splits(train, test, val_size=data["val_size"], seed=data["seed"], side=side)
    stats = split_stats(splits, side)
    preview = splits["train"]
    preview_png = figure_png_bytes(image_grid_figure(
        preview.images[:18], [CLASS_NAMES[y] for y in preview.labels[:18]], rows=2, cols=9,
        suptitle=f"Fashion-MNIST training images ({side}x{side}) with their labels",
    ))
    save_splits(paths.PROCESSED_DIR, splits, side)
    tags = tracking.standard_tags("data", params_path, tracking.files_digest(split_files(paths.PROCESSED_DIR)))
    with mlflow.start_run(experiment_id=experiment_id, run_name="data", tags=tags) as run:
        mlflow.log_params(flatten_params(params, ("data",)))
        mlflow.log_metrics({f"{name}_size": len(split) for name, split in splits.items()})
        tracking.log_bytes(preview_png, "figures/preview.png")
        mlflow.log_dict(stats, "stats.json")
    write_json(paths.STATS_JSON, stats)
    write_bytes(paths.PREVIEW_PNG, preview_png)
    write_text(paths.run_info_json("data"), tracking.RunInfo(run.info.run_id, experiment_id, uri).to_json())
    log.info("splits: %s", ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


if __name__ == "__main__":
    main()
