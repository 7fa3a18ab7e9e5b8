"""DVC stage `train_concise`: the chapter's concise softmax regression, trained on the training split.

nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), nn.CrossEntropyLoss and
torch.optim.SGD (softmax_regression/models/concise.py); the loop, outputs and
MLflow run are pipeline/chapter_training.py's.
"""

from pipeline.chapter_training import PARAMS, chapter_stage  # noqa: F401 (the stage's params, for DVC)
from softmax_regression.models import concise


def build(W, cfg: dict):
    """The chapter's ``nn.Sequential`` from weights ``W``, its loss ``train.loss`` and ``torch.optim.SGD``."""
    return concise.trainer(W, cfg["lr"], cfg["weight_decay"], cfg["loss"])


main = chapter_stage("concise", build, __doc__)

if __name__ == "__main__":
    main()
