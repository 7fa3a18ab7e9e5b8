"""One training loop for both models: the chapter's ``train_ch3``, without its data-loading cost
(the minibatches come from :class:`~.batches.ShuffledBatches`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import CLASS_NAMES
from .batches import ShuffledBatches
from .history import EpochRecord
from .models import SoftmaxRegression
from .params import SCHEDULE_CHOICES as SCHEDULES  # ``train.schedule``; ``constant`` is the chapter's

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss blew up: no model is worth writing."""


DIVERGENCE_FACTOR = 100.0
"""An epoch whose mean loss exceeds this many times a uniform guess's (ln of the class count) has diverged.

With the stable log-softmax the loss of a linear model rarely reaches inf: a
far too large step (lr 1e6) instead scales the logits, and the loss, by
millions while the argmax still looks plausible. Such a model is garbage all
the same; a sound run stays below ln(10) = 2.3 after its first epoch.
"""


def check_not_diverged(train_loss: float, epoch: int, kind: str, n_classes: int = len(CLASS_NAMES)) -> None:
    """Raise TrainingDiverged, naming the epoch, for a NaN, infinite or blown-up mean loss."""
    limit = DIVERGENCE_FACTOR * math.log(n_classes)
    if not math.isfinite(train_loss) or train_loss > limit:
        raise TrainingDiverged(
            f"training of the {kind} model diverged in epoch {epoch}: mean train loss is {train_loss:.4g} "
            f"(limit {limit:.0f}, {DIVERGENCE_FACTOR:.0f} x a uniform guess); lower train.lr"
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


def accuracy(model: SoftmaxRegression, X: torch.Tensor, y: torch.Tensor, chunk: int = 16384) -> float:
    """Fraction of rows whose largest logit is the true class."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(X), chunk):
            correct += int((model.logits(X[start:start + chunk]).argmax(dim=1) == y[start:start + chunk]).sum())
    return correct / len(X)


def train_epoch(model: SoftmaxRegression, batches: ShuffledBatches) -> tuple[float, float]:
    """One pass over the batches; returns (mean train loss, train accuracy) seen during the pass, as the chapter does."""
    model.train()
    n, size = len(batches), batches.batch_size
    # Per batch only what must happen per batch: its mean loss is kept as a tensor and its argmax
    # goes into a preallocated tensor (one small op); the sums come once, at the end of the pass.
    losses: list[torch.Tensor] = []
    predicted = torch.empty(n, dtype=torch.int64, device=batches.device)
    for start, (X, y) in zip(range(0, n, size), batches):
        loss, O = model.train_step(X, y)
        losses.append(loss)
        torch.argmax(O, dim=1, out=predicted[start:start + size])
    last = n - (len(losses) - 1) * size  # every batch is full but the last
    batch_losses = torch.stack(losses).double()
    loss_sum = float(batch_losses[:-1].sum()) * size + float(batch_losses[-1]) * last
    correct = int((predicted == batches.epoch_labels).sum())
    return loss_sum / n, correct / n


def train(
    model: SoftmaxRegression,
    batches: ShuffledBatches,
    val_X: torch.Tensor,
    val_y: torch.Tensor,
    epochs: int,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
    lrs: list[float] | None = None,
) -> list[EpochRecord]:
    """Train for ``epochs``; after each, record train loss / accuracy and validation accuracy.

    ``lrs`` (see :func:`learning_rates`) sets the learning rate of each epoch; without it the model
    keeps the one it was built with. Raises TrainingDiverged, naming the epoch, as soon as the loss blows up.
    """
    if lrs is not None and len(lrs) != epochs:
        raise ValueError(f"{len(lrs)} learning rates for {epochs} epochs")
    history: list[EpochRecord] = []
    bar = tqdm(range(1, epochs + 1), desc=f"train {model.kind}", unit="epoch", disable=not progress)
    for epoch in bar:
        if lrs is not None:
            model.set_lr(lrs[epoch - 1])
        train_loss, train_acc = train_epoch(model, batches)
        try:
            check_not_diverged(train_loss, epoch, model.kind)
        except TrainingDiverged:
            bar.close()
            raise
        record = EpochRecord(epoch, train_loss, train_acc, accuracy(model, val_X, val_y))
        history.append(record)
        bar.set_postfix(loss=f"{train_loss:.3f}", train_acc=f"{train_acc:.3f}", val_acc=f"{record.val_acc:.3f}")
        log.debug("epoch %s", asdict(record))
        if on_epoch is not None:
            on_epoch(record)
    return history
