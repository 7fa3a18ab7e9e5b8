"""A standard solver beside the chapter's SGD: scikit-learn's multinomial LogisticRegression.

It is the same model, ``softmax(X W + b)`` with the cross-entropy loss (plus
an L2 penalty of strength ``1/C``), fitted by L-BFGS on the same training split
and the same features (pixels in [0, 1], standardized where ``data.normalize``
says). Its test accuracy (about 0.84 on raw pixels) is what a linear model
reaches when it is solved properly rather than by 10 epochs of SGD. The fit is
turned into the project's own model (``W = coef_^T``, ``b = intercept_``), so
it is saved, scored, served and tracked like the others.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, C: float, max_iter: int,
                            tol: float) -> LogisticRegression:
    """L-BFGS on the softmax (multinomial) loss with L2 strength 1/C, to the gradient tolerance ``tol``
    (``max_iter`` bounds the iterations, should it not be reached).

    The fit sees the features centred on their training means and the centring
    is folded back into the intercept afterwards (``X W + b = (X - m) W + (b + m W)``):
    the same model and the same L2 penalty (scikit-learn leaves the intercept
    unpenalised), but a far better conditioned problem. Raw pixels share a
    large common mean, and L-BFGS needs two to three times as many iterations
    uncentred to reach the same tolerance on Fashion-MNIST.
    A fit that stops at its tolerance, near the optimum, moves little when its
    inputs move in the last bit; one stopped by an iteration cap far from it
    turns last-bit differences into other test predictions.

    On one BLAS / OpenMP thread: the fit's products split their sums by thread
    count, so a fit on two threads gives other bits than one on one (and
    another machine's core count other weights).
    """
    mean = features.mean(axis=0, dtype=np.float64).astype(features.dtype)
    model = LogisticRegression(C=C, max_iter=max_iter, tol=tol, solver="lbfgs")
    start = time.perf_counter()
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fit stopped by max_iter is still a model
        model.fit(features - mean, labels)
    model.intercept_ = model.intercept_ - mean.astype(np.float64) @ model.coef_.T
    log.info("LogisticRegression fitted in %.1f s (%d iterations)", time.perf_counter() - start,
             int(model.n_iter_.max()))
    return model


class Fitted:
    """The fitted classifier as a linear model: logits ``X W + b`` with ``W = coef_^T``, ``b = intercept_``."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor):
        self.W, self.b = W, b

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return X.reshape(-1, self.W.shape[0]) @ self.W + self.b

    @classmethod
    def from_sklearn(cls, fitted: LogisticRegression) -> Fitted:
        if list(fitted.classes_) != list(range(len(fitted.classes_))):
            raise ValueError(f"expected classes 0..{len(fitted.classes_) - 1}, got {[int(c) for c in fitted.classes_]}")
        return cls(torch.from_numpy(np.ascontiguousarray(fitted.coef_.T, dtype=np.float32)),
                   torch.from_numpy(fitted.intercept_.astype(np.float32)))
