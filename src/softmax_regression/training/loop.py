"""One training loop for both models: the chapter's ``train_ch3``, without its data-loading cost
(the minibatches come from :class:`~softmax_regression.data.batches.ShuffledBatches`).

A model is a callable from features to logits (``net``) and a training step,
``step(X, y, lr) -> (mean loss, logits before the update)``, that its own
module builds with its own optimizer (``scratch.sgd_step``, ``concise.sgd_step``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from typing import Callable

import torch
from tqdm.auto import tqdm

from softmax_regression import CLASS_NAMES
from softmax_regression.data.batches import ShuffledBatches
from softmax_regression.evaluation import accuracy, correct
from softmax_regression.training import SCHEDULES
from softmax_regression.training.history import EpochRecord

log = logging.getLogger(__name__)

Step = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
"""``step(X, y, lr) -> (mean loss, logits before the update)``: one minibatch of SGD."""


class TrainingDiverged(RuntimeError):
    """The loss blew up: no model is worth writing."""


DIVERGENCE_FACTOR = 100.0
"""An epoch whose mean loss exceeds this many times a uniform guess's (ln of the class count) has diverged.

With the stable log-softmax the loss of a linear model rarely reaches inf: a
far too large step (lr 1e6) instead scales the logits, and the loss, by
millions while the argmax still looks plausible. Such a model is garbage all
the same; a sound run stays below ln(10) = 2.3 after its first epoch. A first
epoch can start this high too, from initial weights far larger than the
chapter's N(0, 0.01^2) (``train.init_std``). The limit is the cross-entropy's
and the margin loss's: the squared loss of probabilities is bounded (at most
2 / n_classes), so there only a NaN stops the run, and a far too large step
shows in the scores evaluate reports.
"""


def check_not_diverged(train_loss: float, epoch: int, kind: str, n_classes: int = len(CLASS_NAMES)) -> None:
    """Raise TrainingDiverged, naming the epoch, for a NaN, infinite or blown-up mean loss."""
    limit = DIVERGENCE_FACTOR * math.log(n_classes)
    if not math.isfinite(train_loss) or train_loss > limit:
        advice = "lower train.lr" + (", or train.init_std if it is far above the chapter's 0.01" if epoch == 1 else "")
        raise TrainingDiverged(
            f"training of the {kind} model diverged in epoch {epoch}: mean train loss is {train_loss:.4g} "
            f"(limit {limit:.0f}, {DIVERGENCE_FACTOR:.0f} x a uniform guess); {advice}"
        )


def learning_rates(lr: float, epochs: int, schedule: str) -> list[float]:
    """The learning rate of each epoch, 1 to ``epochs``; both models take the same list.

    - ``constant``: ``lr`` throughout.
    - ``step``: ``lr``, divided by 10 after half of the epochs and again after three quarters
      (torch's ``MultiStepLR``, ``gamma=0.1``, milestones ``ceil(epochs / 2)`` and ``ceil(3 epochs / 4)``).
    - ``cosine``: ``lr (1 + cos(pi (e - 1) / epochs)) / 2`` for epoch ``e``, from ``lr`` down towards 0
      (torch's ``CosineAnnealingLR``, ``T_max=epochs``, ``eta_min=0``, stepped once per epoch).
    """
    if schedule == "constant":
        return [lr] * epochs
    if schedule == "step":
        milestones = {m for m in (math.ceil(epochs / 2), math.ceil(3 * epochs / 4)) if 0 < m < epochs}
        return [lr * 0.1 ** sum(e >= m for m in milestones) for e in range(epochs)]
    if schedule == "cosine":
        return [lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")


def initial_weights(n_features: int, n_classes: int, init_std: float, generator: torch.Generator) -> torch.Tensor:
    """W ~ N(0, init_std^2), n_features x n_classes: the chapter's ``torch.normal(0, 0.01, (784, 10))``."""
    return torch.normal(0.0, init_std, size=(n_features, n_classes), generator=generator)


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA where present, else the CPU. The default, ``cpu``, gives the same bits on every
    machine; a GPU computes the same model to other bits."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available; use auto or cpu")
    return torch.device(device)


def evaluate_accuracy(net: Callable, X: torch.Tensor, y: torch.Tensor) -> float:
    """The chapter's ``evaluate_accuracy``: the accuracy of ``net`` on a whole split."""
    with torch.no_grad():
        return accuracy(net(X), y)


def train_epoch(step: Step, batches: ShuffledBatches, lr: float) -> tuple[float, float]:
    """One pass over the batches; returns (mean train loss, train accuracy) seen during the pass: the chapter's
    ``train_epoch_ch3``, its ``Accumulator`` written out."""
    loss_sum, n_correct, n = 0.0, 0, 0
    for X, y in batches:
        loss, y_hat = step(X, y, lr)
        loss_sum += float(loss) * len(y)
        n_correct += correct(y_hat, y)
        n += len(y)
    return loss_sum / n, n_correct / n


def train(net: Callable, step: Step, batches: ShuffledBatches, val_X: torch.Tensor, val_y: torch.Tensor,
          lrs: list[float], name: str, progress: bool = True,
          on_epoch: Callable[[EpochRecord], None] | None = None) -> list[EpochRecord]:
    """Train for ``len(lrs)`` epochs, epoch ``e`` at learning rate ``lrs[e - 1]`` (:func:`learning_rates`);
    after each, record train loss / accuracy and validation accuracy. Raises TrainingDiverged, naming the
    epoch and the model ``name``, as soon as the loss blows up."""
    history: list[EpochRecord] = []
    bar = tqdm(range(1, len(lrs) + 1), desc=f"train {name}", unit="epoch", disable=not progress)
    for epoch in bar:
        train_loss, train_acc = train_epoch(step, batches, lrs[epoch - 1])
        try:
            check_not_diverged(train_loss, epoch, name)
        except TrainingDiverged:
            bar.close()
            raise
        record = EpochRecord(epoch, train_loss, train_acc, evaluate_accuracy(net, val_X, val_y))
        history.append(record)
        bar.set_postfix(loss=f"{train_loss:.3f}", train_acc=f"{train_acc:.3f}", val_acc=f"{record.val_acc:.3f}")
        log.debug("epoch %s", asdict(record))
        if on_epoch is not None:
            on_epoch(record)
    return history
