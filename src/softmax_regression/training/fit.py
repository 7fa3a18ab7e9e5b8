"""Training one of the chapter's models on the splits, as the train stages and every tuning trial do: one function,
so a trial's model is the stage's to the bit when their params agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from softmax_regression import CLASS_NAMES
from softmax_regression.data.batches import ShuffledBatches, to_labels
from softmax_regression.data.features import Standardization, features
from softmax_regression.data.splits import Split
from softmax_regression.training.history import EpochRecord
from softmax_regression.training.loop import initial_weights, learning_rates, resolve_device, train

Model = Callable[[torch.Tensor, dict], tuple[Callable, Callable, Callable]]
"""``build(W, train_params) -> (net, step, weights)``: the model starting from weights ``W``, its training step
(``training.loop.Step``) and a function returning its ``(W, b)``."""


@dataclass(frozen=True)
class Fitted:
    history: list[EpochRecord]
    lrs: list[float]
    """The learning rate of each epoch."""
    W: torch.Tensor
    b: torch.Tensor
    standardization: Standardization | None
    seconds: float
    """Wall time of the training, from the initial weights to the last epoch's validation accuracy."""


def fit(build: Model, train_split: Split, val_split: Split, cfg: dict, normalize: str, name: str,
        progress: bool = True, on_epoch: Callable[[EpochRecord, float], None] | None = None) -> Fitted:
    """Train the model ``build`` makes with the ``train`` params ``cfg`` on inputs normalized as ``normalize``
    (``data.normalize``), seeded by ``cfg["seed"]``; ``on_epoch(record, lr)`` after each epoch may raise to stop.

    One CPU thread: a multi-threaded matrix product may split its sums differently from run to run, and does
    by design on a machine with more cores; the weights must be the same bytes everywhere.
    """
    torch.set_num_threads(1)
    start = time.perf_counter()
    device = resolve_device(cfg["device"])
    standardization = Standardization.fit(train_split.images, normalize)  # the training split only
    generator = torch.Generator().manual_seed(cfg["seed"])
    n_features = train_split.images[0].size
    W = initial_weights(n_features, len(CLASS_NAMES), cfg["init_std"], generator).to(device)
    net, step, weights = build(W, cfg)
    batches = ShuffledBatches(train_split.images, train_split.labels, cfg["batch_size"], generator, device,
                              standardization)
    lrs = learning_rates(cfg["lr"], cfg["epochs"], cfg["schedule"])
    history = train(net, step, batches, features(val_split.images, standardization, device),
                    to_labels(val_split.labels, device), lrs, name, progress,
                    on_epoch=None if on_epoch is None else lambda record: on_epoch(record, lrs[record.epoch - 1]))
    W_out, b_out = weights()
    return Fitted(history, lrs, W_out, b_out, standardization, time.perf_counter() - start)
