"""DVC stage `train_baseline`: scikit-learn's LogisticRegression, fitted by L-BFGS on the training split.

The same linear softmax model as the chapter's, solved to (near) optimum
instead of by 10 epochs of SGD: what a linear model can reach on raw pixels.
Writes models/baseline.pt, the project's model file (W = coef_^T,
b = intercept_, and the baseline.* params), so evaluate, report,
fmnist-predict and the MLflow registry treat it like the two others. Logs an
MLflow run named `baseline` (and the DVC experiment), starting with the fit:
params, train and validation accuracy, the fit's time, the model file, the
model, the tag model_sha256.

Its own stage, so a train.* change does not refit it: only baseline.* and
the data do.
"""

import logging
import time

import click
import mlflow

from pipeline import paths
from pipeline._cli import load_stage_params, params_option, stage_main, verbose_option
from pipeline.stage_runs import new_model_run, open_experiment
from softmax_regression.atomic import StagedOutputs
from softmax_regression.data.features import Standardization, features
from softmax_regression.data.splits import image_side, input_example, load_split
from softmax_regression.evaluation import accuracy
from softmax_regression.models import BASELINE_KIND
from softmax_regression.models.baseline import Fitted, fit_logistic_regression
from softmax_regression.models.file import model_bytes
from softmax_regression.params import flatten_params, shaping_record
from softmax_regression.tracking.logged_models import log_model_file
from softmax_regression.tracking.runs import TRAINING_SECONDS

log = logging.getLogger(__name__)

PARAMS = ("baseline", "data.normalize", "tracking.experiment")


@click.command(help=__doc__)
@params_option
@verbose_option
@stage_main("train_baseline")
def main(params_path: str) -> None:
    params = load_stage_params(params_path, PARAMS)
    cfg = params["baseline"]
    experiment_id = open_experiment(params["tracking"]["experiment"])
    side = image_side(paths.PROCESSED_DIR)
    train_split = load_split(paths.PROCESSED_DIR, "train")
    val_split = load_split(paths.PROCESSED_DIR, "val")

    started = time.time()
    standardization = Standardization.fit(train_split.images, params["data"]["normalize"])  # training split only
    train_X, val_X = (features(split.images, standardization) for split in (train_split, val_split))
    fitted = fit_logistic_regression(train_X.numpy(), train_split.labels, C=cfg["C"], max_iter=cfg["max_iter"],
                                    tol=cfg["tol"])
    seconds = time.time() - started
    net = Fitted.from_sklearn(fitted)
    train_acc = accuracy(net(train_X).numpy(), train_split.labels)
    val_acc = accuracy(net(val_X).numpy(), val_split.labels)
    n_iter = int(fitted.n_iter_.max())

    shaping = flatten_params(params, ("baseline", "data"))
    checkpoint = model_bytes(BASELINE_KIND, net.W, net.b, side, shaping_record(shaping), standardization)
    with StagedOutputs() as outputs:
        outputs.write_bytes(paths.model_path(BASELINE_KIND), checkpoint)
        with new_model_run(experiment_id, BASELINE_KIND, params_path, checkpoint, started) as run:
            mlflow.log_params(shaping)
            mlflow.log_metrics({"train_acc": train_acc, "val_acc": val_acc, "n_iter": n_iter, TRAINING_SECONDS: seconds})
            log_model_file(BASELINE_KIND, checkpoint, input_example(val_split.images))
            outputs.commit()
    log.info("baseline: train acc %.4f, val acc %.4f after %d L-BFGS iterations; MLflow run %s",
             train_acc, val_acc, n_iter, run.info.run_id)


if __name__ == "__main__":
    main()
