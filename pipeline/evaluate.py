"""DVC stage `evaluate`: score both models (and a scikit-learn baseline) on the test split.

Writes reports/eval/metrics.json (DVC metrics: accuracy, mean loss and macro
F1 per model), reports/eval/per_class.csv (precision / recall / F1 per class),
reports/eval/confusion/<model>.csv (actual vs predicted class: DVC's
confusion plot) and reports/eval/confusion_png/<model>.png (counts in the cells).
The baseline is scored only with evaluate.baseline: true.
"""

import logging

import click
import torch

from softmax_regression import CLASS_NAMES
from softmax_regression.atomic import atomic_dir, write_json, write_text
from softmax_regression.baseline import baseline_probabilities, fit_logistic_regression
from softmax_regression.dataset import load_split
from softmax_regression.metrics import evaluate_probabilities, per_class_csv, predictions_csv
from softmax_regression.models import MODEL_KINDS, load_model
from softmax_regression.params import load_params
from softmax_regression.plots import confusion_matrix_figure, save_figure

from . import paths
from ._cli import params_option, stage_main

log = logging.getLogger(__name__)


@click.command(help=__doc__)
@params_option
@stage_main("evaluate")
def main(params_path: str) -> None:
    cfg = load_params(params_path)["evaluate"]
    test = load_split(paths.PROCESSED_DIR, "test")
    models = {kind: load_model(paths.model_path(kind)) for kind in MODEL_KINDS}
    evaluations = [
        evaluate_probabilities(kind, model.predict_proba(torch.from_numpy(test.images)).numpy(), test.labels)
        for kind, model in models.items()
    ]
    if cfg["baseline"]:
        train = load_split(paths.PROCESSED_DIR, "train")
        baseline = fit_logistic_regression(train.images, train.labels, C=cfg["baseline_C"],
                                           max_iter=cfg["baseline_max_iter"])
        evaluations.append(evaluate_probabilities("baseline", baseline_probabilities(baseline, test.images),
                                                  test.labels))

    figures = {e.name: confusion_matrix_figure(e.confusion, CLASS_NAMES,
                                               f"{e.name}: confusion matrix on the test set "
                                               f"(accuracy {e.accuracy:.4f})")
               for e in evaluations}
    with atomic_dir(paths.CONFUSION_DIR) as tables, atomic_dir(paths.CONFUSION_PNG_DIR) as pngs:
        for e in evaluations:
            (tables / f"{e.name}.csv").write_text(predictions_csv(e, test.labels))
            save_figure(figures[e.name], pngs / f"{e.name}.png")
    write_text(paths.PER_CLASS_CSV, per_class_csv(evaluations))
    write_json(paths.EVAL_METRICS, {e.name: e.summary() for e in evaluations})
    for e in evaluations:
        log.info("%s: test accuracy %.4f, loss %.4f, macro F1 %.4f", e.name, e.accuracy, e.loss, float(e.f1.mean()))


if __name__ == "__main__":
    main()
