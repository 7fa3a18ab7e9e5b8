"""Softmax regression the concise way, as the chapter writes it: ``nn.Sequential``, ``nn.CrossEntropyLoss``,
``torch.optim.SGD``.

PyTorch's cross-entropy takes the logits and does the softmax and the log
together (log-sum-exp), the stable form the scratch model writes out.
"""

from __future__ import annotations

import torch
from torch import nn


def net(W: torch.Tensor) -> nn.Sequential:
    """The chapter's ``nn.Sequential(nn.Flatten(), nn.Linear(784, 10))``, starting from ``W`` (n_features x
    n_classes) and a zero bias: the scratch model's start (the chapter's ``b = torch.zeros(10)``), where the
    chapter's concise net keeps ``nn.Linear``'s random bias, so that both models start equal and end equal."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(*W.shape)).to(W.device)
    with torch.no_grad():
        model[1].weight.copy_(W.T)  # nn.Linear keeps W as n_classes x n_features
        model[1].bias.zero_()
    return model


def weights(net: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` of the net, W as n_features x n_classes (as the model file holds every model's), detached."""
    return net[1].weight.detach().T, net[1].bias.detach()


class _SquaredError(nn.Module):
    """``nn.MSELoss`` between ``softmax(O)`` and the one-hot labels."""

    def forward(self, O: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(torch.softmax(O, dim=1), nn.functional.one_hot(y, O.shape[1]).to(O.dtype))


LOSSES = {"cross_entropy": nn.CrossEntropyLoss, "squared": _SquaredError, "margin": nn.MultiMarginLoss}
"""``train.loss`` -> torch's own loss on the logits (autograd takes its gradient)."""


def sgd_step(net: nn.Module, loss: nn.Module, optimizer: torch.optim.Optimizer):
    """The training step the loop calls per minibatch: ``step(X, y, lr) -> (loss, logits before the update)``;
    ``lr`` is the epoch's, set on the optimizer as a learning-rate scheduler would."""

    def step(X: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        for group in optimizer.param_groups:
            group["lr"] = lr
        y_hat = net(X)
        l = loss(y_hat, y)
        optimizer.zero_grad()
        l.backward()
        optimizer.step()
        return l.detach(), y_hat.detach()

    return step


def trainer(W: torch.Tensor, lr: float, weight_decay: float = 0.0, loss: str = "cross_entropy"):
    """What the train stage trains: the net from weights ``W``, its step with torch's loss ``loss`` and
    ``torch.optim.SGD``, as the chapter builds them, and a function returning its ``(W, b)``."""
    model = net(W)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    return model, sgd_step(model, LOSSES[loss](), optimizer), lambda: weights(model)
