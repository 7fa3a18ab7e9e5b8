"""Softmax regression the concise way: ``nn.Linear``, ``nn.CrossEntropyLoss``, torch's SGD.

PyTorch's cross-entropy takes the logits and does the softmax and the log
together (log-sum-exp), the stable form the scratch model writes out.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.sgd import sgd

from ..params import LOSS_CHOICES


class SquaredOnSoftmax(nn.Module):
    """``nn.MSELoss`` between ``softmax(O)`` and the one-hot labels: the squared-error choice."""

    def __init__(self):
        super().__init__()
        self.mse = nn.MSELoss()

    def forward(self, O: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mse(torch.softmax(O, dim=1), nn.functional.one_hot(y, O.shape[1]).to(O.dtype))


def loss_module(name: str) -> nn.Module:
    """``train.loss`` -> torch's built-in: ``CrossEntropyLoss``, ``MSELoss`` on softmax, ``MultiMarginLoss``."""
    if name == "cross_entropy":
        return nn.CrossEntropyLoss()
    if name == "squared":
        return SquaredOnSoftmax()
    if name == "margin":
        return nn.MultiMarginLoss()
    raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_CHOICES)}")


class ConciseSoftmaxRegression:
    """``nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes))`` trained by torch's SGD update."""

    kind = "concise"

    def __init__(self, W: torch.Tensor, lr: float, weight_decay: float = 0.0, loss: nn.Module | None = None):
        n_features, n_classes = W.shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes)).to(W.device)
        with torch.no_grad():
            self.net[1].weight.copy_(W.T)  # nn.Linear keeps W as n_classes x n_features
            self.net[1].bias.zero_()
        self.params = list(self.net.parameters())
        self.loss = loss if loss is not None else nn.CrossEntropyLoss()
        # PyTorch's CPU log-softmax over a last dimension of 10 is a scalar loop; cross-entropy can take
        # the logits as one (N, C, d1) sample instead (the same mean over the same terms), 8x faster.
        self._batch_major = isinstance(self.loss, nn.CrossEntropyLoss)
        self.lr, self.weight_decay = lr, weight_decay

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)

    def train_step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, one SGD step; returns (loss, logits) before the update.

        Cross-entropy sees the logits as one sample of ``n_classes x batch`` (the ``(N, C, d1)``
        form ``CrossEntropyLoss`` takes), the same mean over the same terms: PyTorch's CPU
        log-softmax over a last dimension shorter than a vector register (10 classes) runs a
        scalar loop, 8x slower than over the batch dimension.

        The step is ``torch.optim.sgd.sgd``, the function ``torch.optim.SGD.step`` runs for its
        param group, called directly, so the parameters get the same bits as from an
        ``SGD(net.parameters(), lr, weight_decay=...)`` (a test checks it). The ``SGD`` object
        would add, per process, the import of torch's compiler stack (``torch._dynamo``, 1 to
        1.4 s here: its constructor and ``step`` are marked for it) and, per step, a profiler
        range and hook checks around the update (70 us, more than the update itself).
        """
        O = self.net(X)
        loss = self.loss(O.T.unsqueeze(0), y.unsqueeze(0)) if self._batch_major else self.loss(O, y)
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
