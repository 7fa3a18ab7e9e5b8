"""The chapter's worked examples, computed by the project's own code on each run (the report shows them).

- the one-hot encoding of a few real labels;
- softmax on the chapter's small example, a 2 x 5 matrix of N(0, 1) numbers:
  every entry positive, every row summing to 1;
- cross-entropy by indexing, ``y_hat[[0, 1], y]`` on the chapter's
  ``y_hat = [[0.1, 0.3, 0.6], [0.3, 0.2, 0.5]]`` and ``y = [0, 2]``;
- the gradient of the cross-entropy with respect to the logits,
  ``softmax(O) - onehot(y)``, against autograd on a real batch.

Everything is JSON-ready (lists of floats), so the report stage renders it
without importing torch.
"""

from __future__ import annotations

import numpy as np
import torch

from softmax_regression import CLASS_NAMES
from softmax_regression.data.features import Standardization
from softmax_regression.models.scratch import cross_entropy, cross_entropy_grad, softmax

CHAPTER_Y_HAT = [[0.1, 0.3, 0.6], [0.3, 0.2, 0.5]]
CHAPTER_Y = [0, 2]


def one_hot(labels: np.ndarray, n_classes: int = len(CLASS_NAMES)) -> list[list[int]]:
    """Row i has a 1 in column ``labels[i]`` and 0 elsewhere."""
    return np.eye(n_classes, dtype=int)[np.asarray(labels, dtype=int)].tolist()


def softmax_example(seed: int = 0) -> dict:
    """The chapter's ``X = torch.normal(0, 1, (2, 5))`` (seeded) through the scratch model's softmax."""
    X = torch.normal(0.0, 1.0, size=(2, 5), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    P = softmax(X)
    return {"X": X.tolist(), "softmax": P.tolist(), "row_sums": P.sum(dim=1).tolist(),
            "all_positive": bool((P > 0).all())}


def cross_entropy_by_indexing() -> dict:
    """``y_hat[[0, 1], y]`` picks each row's probability of its true class; the loss is minus its log."""
    y_hat = torch.tensor(CHAPTER_Y_HAT, dtype=torch.float64)
    y = torch.tensor(CHAPTER_Y)
    picked = y_hat[torch.arange(len(y)), y]
    return {"y_hat": CHAPTER_Y_HAT, "y": CHAPTER_Y, "picked": picked.tolist(), "losses": (-torch.log(picked)).tolist()}


def gradient_check(W: torch.Tensor, b: torch.Tensor, images_uint8: np.ndarray, labels: np.ndarray,
                   standardization: Standardization | None = None) -> dict:
    """autograd's gradient of the summed cross-entropy with respect to the logits, against the chapter's
    ``softmax(O) - onehot(y)`` as the scratch model computes it, on a real batch; returns the largest difference. The logits are the model's
    own: its inputs standardized as in training where it was (``data.normalize``)."""
    X = torch.from_numpy(np.ascontiguousarray(images_uint8)).double() / 255
    if standardization is not None:
        X = standardization.apply_(X)  # in float64: the statistics are promoted, exactly
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    O = (X @ W.double() + b.double()).detach().requires_grad_(True)
    (cross_entropy(O, y) * len(y)).backward()
    formula = cross_entropy_grad(O.detach(), y) * len(y)  # of the summed loss
    return {"batch": len(y), "max_abs_difference": float((O.grad - formula).abs().max()),
            "largest_gradient": float(formula.abs().max())}


def worked_examples(W: torch.Tensor, b: torch.Tensor, images_uint8: np.ndarray, labels: np.ndarray,
                    n_one_hot: int = 5, batch: int = 256, standardization: Standardization | None = None) -> dict:
    """All of the chapter's worked examples for one model's weights (and input standardization) and one
    split's first images."""
    return {
        "one_hot": {"labels": [int(v) for v in labels[:n_one_hot]],
                    "names": [CLASS_NAMES[int(v)] for v in labels[:n_one_hot]],
                    "encoded": one_hot(labels[:n_one_hot])},
        "softmax": softmax_example(),
        "cross_entropy": cross_entropy_by_indexing(),
        "gradient": gradient_check(W, b, images_uint8[:batch], labels[:batch], standardization),
    }
