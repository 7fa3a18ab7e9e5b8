"""Softmax regression from scratch, as the chapter writes it, made numerically stable.

    O = X W + b                          logits, one row per image
    softmax(O)_ij = exp(O_ij) / sum_k exp(O_ik)
    l_i = -log softmax(O)_{i, y_i}       cross-entropy, by indexing the true class
    dl/dO = softmax(O) - onehot(y)       the chapter's gradient
    dl/dW = X^T dl/dO,  dl/db = sum_i dl/dO_i
    W <- W - lr * (dl/dW + weight_decay * W)   minibatch SGD on the mean loss

The chapter's ``softmax`` exponentiates the raw logits and overflows for
large ones (it says so itself). Here every exponent is taken of ``O - max(O)``,
which leaves softmax unchanged (the factor exp(-max) cancels) and keeps every
exponent <= 0; the log is taken by log-sum-exp, never of a rounded-off 0.

No ``torch.nn``, no ``torch.optim`` and no autograd in the training step: the
gradient is the formula above, written out: ``losses.cross_entropy_and_grad``,
beside the other losses ``train.loss`` can choose. (The tests check each
against autograd and against torch's built-in loss.)
"""

from __future__ import annotations

import torch

from .. import BASELINE_KIND
from ..losses import LossAndGrad, cross_entropy_and_grad


def softmax(O: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax; rows sum to 1 and stay finite for any finite logits."""
    O_exp = torch.exp(O - O.max(dim=1, keepdim=True).values)
    return O_exp / O_exp.sum(dim=1, keepdim=True)


def log_softmax(O: torch.Tensor) -> torch.Tensor:
    """``log softmax(O)`` by log-sum-exp: ``O - max - log(sum exp(O - max))``."""
    shifted = O - O.max(dim=1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))


def cross_entropy(O: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-log softmax(O)[i, y_i]``: each row's true-class entry, picked by indexing."""
    return -log_softmax(O)[torch.arange(len(O), device=O.device), y].mean()


def sgd(params: list[torch.Tensor], grads: list[torch.Tensor], lr: float, weight_decay: float = 0.0) -> None:
    """``param -= lr * (grad + weight_decay * param)``, in place: the chapter's ``sgd`` on the mean loss."""
    for param, grad in zip(params, grads):
        if weight_decay:
            grad = grad + weight_decay * param
        param.sub_(grad, alpha=lr)


class ScratchSoftmaxRegression:
    """``W`` (n_features x n_classes) and ``b``; logits ``X W + b``; trained by hand-written SGD."""

    kind = "scratch"

    def __init__(self, W: torch.Tensor, lr: float, weight_decay: float = 0.0,
                 loss_and_grad: LossAndGrad = cross_entropy_and_grad):
        self.W = W.detach().T.contiguous().T  # n_features x n_classes, stored column by column (see logits)
        self.b = torch.zeros(W.shape[1], device=W.device, dtype=W.dtype)
        self.lr, self.weight_decay, self.loss_and_grad = lr, weight_decay, loss_and_grad

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        # X W, computed as (W^T X^T)^T with W^T contiguous (W is stored column by column): the
        # same product, in the layout MKL multiplies fastest for a 10-column W.
        return (self.W.T @ X.reshape(-1, self.W.shape[0]).T).T + self.b

    def train_step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, the gradient formula, one SGD update; returns (loss, logits) before the update."""
        O = self.logits(X)
        loss, dO = self.loss_and_grad(O, y)
        dW = (dO.T @ X).T            # X^T dO, in the faster layout, and laid out as W is
        db = dO.sum(dim=0)
        sgd([self.W, self.b], [dW, db], self.lr, self.weight_decay)
        return loss, O

    def set_lr(self, lr: float) -> None:
        """The step size of the next updates (a learning-rate schedule sets it each epoch)."""
        self.lr = lr

    def train(self) -> None:
        """Nothing to switch: no dropout or batch norm here (mirrors ``nn.Module.train``)."""

    def eval(self) -> None:
        """See :meth:`train`."""

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)`` with W as n_features x n_classes, on the CPU."""
        return self.W.cpu(), self.b.cpu()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"W": self.W.cpu().clone(memory_format=torch.contiguous_format), "b": self.b.cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["W"].shape != self.W.shape or state["b"].shape != self.b.shape:
            raise RuntimeError(f"shape mismatch: W {tuple(state['W'].shape)} vs {tuple(self.W.shape)}")
        self.W.copy_(state["W"])
        self.b.copy_(state["b"])


class FittedSoftmaxRegression(ScratchSoftmaxRegression):
    """The baseline: the scratch model's ``X W + b`` holding weights fitted by scikit-learn's L-BFGS."""

    kind = BASELINE_KIND
