"""Scoring a model: metrics, calibration and the chapter's worked examples.

This file holds what training and serving use too (no torch, no scikit-learn): accuracy, and the
temperature a calibrated prediction divides the logits by.
"""

import numpy as np


def accuracy(y_hat, y) -> float:
    """The fraction of rows whose largest entry (a logit or a probability) is the true class: the chapter's
    ``accuracy`` over the number of rows. Takes torch tensors or numpy arrays alike."""
    return float((y_hat.argmax(axis=1) == y).sum()) / len(y)


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the probabilities a model gives with its logits divided by ``T``."""
    from scipy.special import softmax  # only where a temperature is applied: scipy costs a train stage time

    return softmax(np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, 1.0)) / temperature, axis=1)
