"""Softmax regression the concise way: ``nn.Linear``, ``nn.CrossEntropyLoss``, torch's SGD.

PyTorch's cross-entropy takes the logits and does the softmax and the log
together (log-sum-exp), the stable form the scratch model writes out.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.sgd import sgd

from ..losses import LOSSES, TorchLoss


class ConciseSoftmaxRegression:
    """``nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes))`` trained by torch's SGD update."""

    kind = "concise"

    def __init__(self, W: torch.Tensor, lr: float, weight_decay: float = 0.0, loss: TorchLoss | None = None):
        n_features, n_classes = W.shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes)).to(W.device)
        with torch.no_grad():
            self.net[1].weight.copy_(W.T)  # nn.Linear keeps W as n_classes x n_features
            self.net[1].bias.zero_()
        self.params = list(self.net.parameters())
        self.loss = loss if loss is not None else LOSSES["cross_entropy"].concise()
        self.lr, self.weight_decay = lr, weight_decay

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)

    def train_step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, one SGD step; returns (loss, logits) before the update.

        The loss is one of :data:`~softmax_regression.losses.LOSSES` (cross-entropy by default).
        The step is ``torch.optim.sgd.sgd``, the function ``torch.optim.SGD.step`` runs for its
        param group, called directly, so the parameters get the same bits as from an
        ``SGD(net.parameters(), lr, weight_decay=...)`` (a test checks it). The ``SGD`` object
        would add, per process, the import of torch's compiler stack (``torch._dynamo``: its
        constructor and ``step`` are marked for it) and, per step, a profiler range and hook
        checks that cost more than the update itself.
        """
        O = self.net(X)
        loss = self.loss(O, y)
        for param in self.params:  # zero_grad(set_to_none=True)
            param.grad = None
        loss.backward()
        with torch.no_grad():
            sgd(self.params, [param.grad for param in self.params], [None] * len(self.params),
                foreach=False, weight_decay=self.weight_decay, momentum=0.0, lr=self.lr, dampening=0.0,
                nesterov=False, maximize=False)
        return loss.detach(), O.detach()

    def set_lr(self, lr: float) -> None:
        """The step size of the next updates (a learning-rate schedule sets it each epoch)."""
        self.lr = lr

    def train(self) -> None:
        self.net.train()

    def eval(self) -> None:
        self.net.eval()

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)`` with W as n_features x n_classes, detached, on the CPU."""
        linear = self.net[1]
        return linear.weight.detach().T.cpu(), linear.bias.detach().cpu()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)
