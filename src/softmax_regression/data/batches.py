"""Minibatches of a uint8 split in a fresh seeded order each epoch, prepared one step ahead.

The chapter feeds each epoch through a DataLoader that decodes every image with
``ToTensor`` in worker processes; the arithmetic of an epoch is tiny next to
that. Here a minibatch is a row-gather of a seeded permutation of the uint8
split, scaled to [0, 1] (and standardized, when asked) in a reused buffer: no
per-sample work, no worker processes, no float copy of the whole split.

The gathering runs in one background thread, a few batches ahead of the
training step, on the core the single-threaded training leaves idle. Which rows
form batch ``i`` is decided up front by the seeded permutation, and every
batch is computed by the same element-wise operations wherever they run, so
the batches are the same bits with or without the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from softmax_regression.data.features import Standardization

CHUNK_BATCHES = 16
"""Batches the background thread prepares at a time (one handover per chunk, not per batch)."""

CHUNKS_AHEAD = 2
"""Chunk buffers: the one being trained on and the one being prepared."""


def to_labels(labels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64)).to(device)


class ShuffledBatches:
    """Iterating gives ``(features, labels)`` per minibatch, every example once per epoch, in an order drawn
    from ``generator`` at the start of the epoch.

    A batch's ``features`` live in a reused buffer: they are valid until the next batch is asked for.
    ``epoch_labels`` holds the current epoch's labels in batch order (batch ``i`` is rows
    ``[i * batch_size, (i + 1) * batch_size)`` of it).
    """

    def __init__(self, images_uint8: np.ndarray, labels: np.ndarray, batch_size: int,
                 generator: torch.Generator, device: torch.device | str = "cpu",
                 standardization: Standardization | None = None, chunk_batches: int = CHUNK_BATCHES):
        self.images = torch.as_tensor(np.ascontiguousarray(images_uint8)).to(device)
        self.labels = to_labels(labels, device)
        self.batch_size, self.generator, self.device = batch_size, generator, device
        self.standardization = standardization
        rows = batch_size * chunk_batches
        self._buffers = [
            (torch.empty((rows, self.images.shape[1]), dtype=torch.uint8, device=device),
             torch.empty((rows, self.images.shape[1]), dtype=torch.float32, device=device))
            for _ in range(CHUNKS_AHEAD)
        ]
        self._in_epoch = False

    def __len__(self) -> int:
        return len(self.labels)

    def _prepare(self, rows: torch.Tensor, buffer: int) -> torch.Tensor:
        """Gather ``rows`` into chunk buffer ``buffer`` and turn them into features there."""
        pixels, features = (b[:len(rows)] for b in self._buffers[buffer])
        torch.index_select(self.images, 0, rows, out=pixels)
        features.copy_(pixels).div_(255)
        if self.standardization is not None:
            self.standardization.apply_(features)
        return features

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._in_epoch:  # two epochs at once would share the buffers and epoch_labels
            raise RuntimeError("ShuffledBatches: an epoch is still being iterated; finish or close it first")
        self._in_epoch = True
        try:
            order = torch.randperm(len(self.labels), generator=self.generator).to(self.device)
            self.epoch_labels = self.labels[order]
            size, chunk_rows = self.batch_size, len(self._buffers[0][0])
            chunks = [order[start:start + chunk_rows] for start in range(0, len(order), chunk_rows)]
            with _Prefetch(self._prepare, chunks, len(self._buffers)) as prepared:
                start = 0
                for features in prepared:
                    for offset in range(0, len(features), size):
                        yield features[offset:offset + size], self.epoch_labels[start + offset:start + offset + size]
                    start += len(features)
        finally:
            self._in_epoch = False


class _Prefetch:
    """Runs ``prepare(chunk, buffer)`` for each chunk in a background thread, at most ``buffers`` ahead.

    Iterating yields the prepared results in order; a buffer is handed back for
    reuse when the next result is asked for, so a result stays intact while the
    consumer works on it. An error in the thread is raised in the consumer;
    leaving early (``close``, an exception) stops the thread before returning.
    """

    _STOP = -1

    def __init__(self, prepare, chunks: list[torch.Tensor], buffers: int):
        self._prepare, self._chunks = prepare, chunks
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[tuple[torch.Tensor | None, BaseException | None, int]] = queue.SimpleQueue()
        for buffer in range(buffers):
            self._free.put(buffer)
        self._thread = threading.Thread(target=self._work, name="batch-prefetch", daemon=True)

    def _work(self) -> None:
        for chunk in self._chunks:
            buffer = self._free.get()
            if buffer == self._STOP:
                return
            try:
                self._ready.put((self._prepare(chunk, buffer), None, buffer))
            except BaseException as exc:  # handed to the consumer, which raises it
                self._ready.put((None, exc, buffer))
                return

    def __enter__(self) -> Iterator[torch.Tensor]:
        self._thread.start()
        return self._results()

    def _results(self) -> Iterator[torch.Tensor]:
        for _ in self._chunks:
            result, error, buffer = self._ready.get()
            if error is not None:
                raise error
            yield result
            self._free.put(buffer)

    def __exit__(self, *exc_info) -> None:
        self._free.put(self._STOP)
        self._thread.join()
