"""DVC stage `train_scratch`: the chapter's softmax regression from scratch, trained on the training split.

The net X W + b, the cross-entropy by indexing, its gradient written out and
the chapter's sgd (softmax_regression/models/scratch.py); the loop, outputs and
MLflow run are pipeline/chapter_training.py's.
"""

from pipeline.chapter_training import PARAMS, chapter_stage  # noqa: F401 (the stage's params, for DVC)
from softmax_regression.models import scratch
from softmax_regression.models.losses import LOSSES


def build(W, cfg: dict):
    """The chapter's net from weights ``W``, and its hand-written SGD step on the loss ``train.loss``."""
    return scratch.trainer(W, cfg["weight_decay"], *LOSSES[cfg["loss"]])


main = chapter_stage("scratch", build, __doc__)

if __name__ == "__main__":
    main()
