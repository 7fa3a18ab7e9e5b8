"""DVC stage `preprocess`: flatten the images, split off a stratified validation set, draw a preview.

Logs an MLflow run named `data` (params data.*, split sizes, the preview and
the stats, the dataset checksum as the tag dataset_sha256). The outputs are
renamed into place together at the end of the run.
"""

import logging

import click
import mlflow

from pipeline import paths
from pipeline._cli import load_stage_params, params_option, stage_main, verbose_option
from pipeline.stage_runs import open_experiment, run_tags_for
from softmax_regression import CLASS_NAMES
from softmax_regression.atomic import StagedOutputs
from softmax_regression.data.splits import SIDE, load_raw, make_splits, split_stats, write_splits
from softmax_regression.params import flatten_params
from softmax_regression.reporting.images import image_grid_figure
from softmax_regression.reporting.png import figure_png_bytes
from softmax_regression.tracking.runs import log_bytes, tracked_run

log = logging.getLogger(__name__)

PARAMS = ("data.resize", "data.val_size", "data.seed", "tracking.experiment")


@click.command(help=__doc__ + "\n\nWrites data/processed/{train,val,test}_{images,labels}.npy "
               "(uint8, one row of r*r pixels per image), reports/data/stats.json and "
               "reports/data/preview.png.")
@params_option
@verbose_option
@stage_main("preprocess")
def main(params_path: str) -> None:
    params = load_stage_params(params_path, PARAMS)
    data = params["data"]
    experiment_id = open_experiment(params["tracking"]["experiment"])
    side = data["resize"] or SIDE
    train, test = load_raw(paths.RAW_DIR)
    splits = make_splits(train, test, val_size=data["val_size"], seed=data["seed"], side=side)
    stats = split_stats(splits, side)
    preview = splits["train"]
    preview_png = figure_png_bytes(image_grid_figure(
        preview.images[:18], [CLASS_NAMES[y] for y in preview.labels[:18]], rows=2, cols=9,
        suptitle=f"Fashion-MNIST training images ({side}x{side}) with their labels",
    ))
    with StagedOutputs() as outputs:
        processed = outputs.directory(paths.PROCESSED_DIR)
        write_splits(processed, splits, side)
        outputs.write_json(paths.STATS_JSON, stats)
        outputs.write_bytes(paths.PREVIEW_PNG, preview_png)
        tags = run_tags_for("data", params_path, processed)  # hashes the splits as staged, not yet in place
        with tracked_run(experiment_id=experiment_id, run_name="data", tags=tags):
            mlflow.log_params(flatten_params(params, ("data",)))
            mlflow.log_metrics({f"{name}_size": len(split) for name, split in splits.items()})
            log_bytes(preview_png, "figures/preview.png")
            mlflow.log_dict(stats, "stats.json")
            outputs.commit()
    log.info("splits: %s", ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


if __name__ == "__main__":
    main()
