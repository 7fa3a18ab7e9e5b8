"""Minibatches of a uint8 split in a fresh seeded order each epoch: the chapter's shuffled ``DataLoader``
without its per-image decoding (``ToTensor`` in worker processes), which costs more than an epoch's arithmetic.

A batch is the rows of a seeded permutation, gathered from the uint8 split and
scaled to [0, 1] (then standardized, when asked): every element the same bits
whatever the batch size or the machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from softmax_regression.data.features import Standardization


def to_labels(labels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64)).to(device)


class ShuffledBatches:
    """Iterating gives ``(features, labels)`` per minibatch, every example once per epoch, in an order drawn
    from ``generator`` at the start of the epoch; ``epoch_labels`` holds that epoch's labels in batch order."""

    def __init__(self, images_uint8: np.ndarray, labels: np.ndarray, batch_size: int,
                 generator: torch.Generator, device: torch.device | str = "cpu",
                 standardization: Standardization | None = None):
        self.images = torch.as_tensor(np.ascontiguousarray(images_uint8)).to(device)
        self.labels = to_labels(labels, device)
        self.batch_size, self.generator, self.device = batch_size, generator, device
        self.standardization = standardization

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.labels), generator=self.generator).to(self.device)
        self.epoch_labels = self.labels[order]
        for start in range(0, len(order), self.batch_size):
            X = self.images[order[start:start + self.batch_size]].float().div_(255)
            if self.standardization is not None:
                self.standardization.apply_(X)
            yield X, self.epoch_labels[start:start + self.batch_size]
