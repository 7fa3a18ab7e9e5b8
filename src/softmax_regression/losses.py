"""The losses ``train.loss`` chooses from, one entry each in :data:`LOSSES`, for both models.

An entry holds the scratch model's loss with its gradient written out by hand,
and the concise model's loss built from torch's own (autograd takes its
gradient). A test checks the two against each other for every entry.

``params.yaml``'s check reads the names from here and must not load torch, so
this module imports torch only inside the functions (by then the caller holds
tensors, and torch is loaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

LossAndGrad = Callable[["torch.Tensor", "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]
"""``(logits O, labels y) -> (mean loss, d loss / d O)``."""
TorchLoss = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
"""``(logits O, labels y) -> mean loss``, differentiable by autograd."""


def cross_entropy_and_grad(O: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean cross-entropy and its gradient ``(softmax(O) - onehot(y)) / n`` with respect to ``O``.

    One pass computes both: the shifted exponentials serve the loss (by
    log-sum-exp) and the softmax. Each row's true-class entry is picked with
    ``gather`` and the one-hot subtracted with ``scatter_add_``: the same
    numbers as indexing with ``[range(n), y]`` (as ``scratch.cross_entropy``
    does), without Python-level advanced indexing in the training loop.
    """
    n = len(O)
    true_class = y.unsqueeze(1)
    shifted = O - O.max(dim=1, keepdim=True).values
    exp = shifted.exp()
    total = exp.sum(dim=1, keepdim=True)
    loss = (total.log() - shifted.gather(1, true_class)).mean()
    grad = exp.div_(total)                                            # softmax(O)
    grad.scatter_add_(1, true_class, O.new_full(true_class.shape, -1.0))  # - onehot(y)
    return loss, grad.div_(n)                                         # of the mean loss


def squared_and_grad(O: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error between the softmax probabilities and the one-hot labels, averaged over every entry
    (``nn.MSELoss`` on ``softmax(O)``), and its gradient with respect to ``O``.

        L = sum_ik (P_ik - Y_ik)^2 / (n C),   P = softmax(O)
        dL/dP = 2 (P - Y) / (n C)
        dL/dO_i = P_i * (dL/dP_i - <dL/dP_i, P_i>)      (the softmax Jacobian, diag(P) - P P^T)

    The chapter's argument against it: once P is near 0 or 1 the softmax
    Jacobian is tiny, so a confident wrong answer barely moves the weights.
    """
    import torch

    n, C = O.shape
    P = (O - O.max(dim=1, keepdim=True).values).exp()
    P /= P.sum(dim=1, keepdim=True)                      # softmax(O)
    diff = P.clone()
    diff[torch.arange(n, device=O.device), y] -= 1       # P - Y
    loss = (diff * diff).sum() / (n * C)
    g = 2 * diff / (n * C)
    return loss, P * (g - (g * P).sum(dim=1, keepdim=True))


def margin_and_grad(O: torch.Tensor, y: torch.Tensor, margin: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The multi-class hinge (``nn.MultiMarginLoss``): each wrong class j costs max(0, margin - O_y + O_j),
    summed over j != y, divided by the class count C, averaged over the batch; and its gradient.

    dL/dO_j = 1 / (n C) for each wrong j inside the margin, and the true class gets minus their count.
    """
    import torch

    n, C = O.shape
    rows = torch.arange(n, device=O.device)
    terms = margin - O[rows, y].unsqueeze(1) + O
    terms[rows, y] = 0                                    # the true class is not its own rival
    active = (terms > 0).to(O.dtype)
    loss = (terms.clamp(min=0)).sum() / (n * C)
    grad = active / (n * C)
    grad[rows, y] = -active.sum(dim=1) / (n * C)
    return loss, grad


def torch_cross_entropy() -> TorchLoss:
    """``nn.CrossEntropyLoss`` on the logits taken as one sample of ``n_classes x batch`` (the ``(N, C, d1)``
    form it accepts): the same mean over the same terms. PyTorch's CPU log-softmax over a last dimension
    shorter than a vector register (10 classes) is a scalar loop; over the batch dimension it is vectorised."""
    from torch import nn

    cross_entropy = nn.CrossEntropyLoss()
    return lambda O, y: cross_entropy(O.T.unsqueeze(0), y.unsqueeze(0))


def torch_squared() -> TorchLoss:
    """``nn.MSELoss`` between ``softmax(O)`` and the one-hot labels."""
    import torch
    from torch import nn

    mse = nn.MSELoss()
    return lambda O, y: mse(torch.softmax(O, dim=1), nn.functional.one_hot(y, O.shape[1]).to(O.dtype))


def torch_margin() -> TorchLoss:
    """``nn.MultiMarginLoss`` (margin 1, as :func:`margin_and_grad`)."""
    from torch import nn

    return nn.MultiMarginLoss()


@dataclass(frozen=True)
class Loss:
    scratch: LossAndGrad
    """The scratch model's loss and gradient."""
    concise: Callable[[], TorchLoss]
    """Builds the concise model's loss."""


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss(cross_entropy_and_grad, torch_cross_entropy),
    "squared": Loss(squared_and_grad, torch_squared),
    "margin": Loss(margin_and_grad, torch_margin),
}
"""``train.loss`` -> its implementations; the first is the default."""
