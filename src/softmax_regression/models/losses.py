"""The scratch model's losses (``train.loss``), each with its gradient with respect to the logits written out.

The cross-entropy is the chapter's (``scratch.py``); the two others show why it
is the loss of choice. The concise model takes torch's own for each
(``concise.LOSSES``), and a test checks each pair against the other and
against autograd.
"""

from __future__ import annotations

import torch

from softmax_regression.models.scratch import cross_entropy, cross_entropy_grad, softmax


def squared(O: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared error between ``softmax(O)`` and the one-hot labels, averaged over every entry (``nn.MSELoss``)."""
    n, C = O.shape
    diff = softmax(O)
    diff[torch.arange(n, device=O.device), y] -= 1
    return (diff * diff).sum() / (n * C)


def squared_grad(O: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``dL/dO_i = P_i * (g_i - <g_i, P_i>)`` with ``P = softmax(O)``, ``g = 2 (P - Y) / (n C)``: the softmax
    Jacobian ``diag(P) - P P^T``. Once P is near 0 or 1 it is tiny, so a confident wrong answer barely
    moves the weights: the chapter's argument against this loss."""
    n, C = O.shape
    P = softmax(O)
    diff = P.clone()
    diff[torch.arange(n, device=O.device), y] -= 1
    g = 2 * diff / (n * C)
    return P * (g - (g * P).sum(dim=1, keepdim=True))


def _margin_terms(O: torch.Tensor, y: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    rows = torch.arange(len(O), device=O.device)
    terms = margin - O[rows, y].unsqueeze(1) + O
    terms[rows, y] = 0  # the true class is not its own rival
    return terms


def margin(O: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The multi-class hinge (``nn.MultiMarginLoss``): each wrong class j costs max(0, 1 - O_y + O_j), summed
    over j != y, divided by the class count C, averaged over the batch."""
    return _margin_terms(O, y).clamp(min=0).sum() / O.numel()


def margin_grad(O: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 / (n C)`` for each wrong class inside the margin; the true class gets minus their count."""
    active = (_margin_terms(O, y) > 0).to(O.dtype)
    grad = active / O.numel()
    grad[torch.arange(len(O), device=O.device), y] = -active.sum(dim=1) / O.numel()
    return grad


LOSSES = {"cross_entropy": (cross_entropy, cross_entropy_grad), "squared": (squared, squared_grad),
          "margin": (margin, margin_grad)}
"""``train.loss`` -> the scratch model's ``(loss, gradient)``."""
