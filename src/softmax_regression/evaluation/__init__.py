"""Scoring a model: metrics, calibration and the chapter's worked examples.

This file holds what training and serving use too (no torch, no scikit-learn): accuracy, and the
temperature a calibrated prediction divides the logits by.
"""

import numpy as np


def correct(y_hat, y) -> int:
    """The chapter's ``accuracy``: how many rows have their largest entry (a logit or a probability) at the
    true class. Takes torch tensors or numpy arrays alike."""
    return int((y_hat.argmax(axis=1) == y).sum())


def accuracy(y_hat, y) -> float:
    """The fraction of rows :func:`correct` counts."""
    return correct(y_hat, y) / len(y)


TEMPERATURE_RANGE = (0.01, 100.0)
"""The temperatures a prediction takes (``fmnist-predict --temperature``, a registered version's tag): wider
than any evaluate fits (``calibration.TEMPERATURE_BOUNDS``)."""


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the probabilities a model gives with its logits divided by ``T``."""
    from scipy.special import softmax  # here: fmnist-predict imports this module, and needs scipy only for this

    return softmax(np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, 1.0)) / temperature, axis=1)
