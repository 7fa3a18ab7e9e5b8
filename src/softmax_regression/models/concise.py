"""Softmax regression the concise way: ``nn.Linear``, ``nn.CrossEntropyLoss``, ``torch.optim.SGD``.

PyTorch's cross-entropy takes the logits and does the softmax and the log
together (log-sum-exp), the stable form the scratch model writes out.
"""

from __future__ import annotations

import torch
from torch import nn


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
    raise ValueError(f"unknown loss {name!r}; expected cross_entropy, squared or margin")


class ConciseSoftmaxRegression:
    """``nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes))`` trained by ``torch.optim.SGD``."""

    kind = "concise"

    def __init__(self, W: torch.Tensor, lr: float, weight_decay: float = 0.0, loss: nn.Module | None = None):
        n_features, n_classes = W.shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes)).to(W.device)
        with torch.no_grad():
            self.net[1].weight.copy_(W.T)  # nn.Linear keeps W as n_classes x n_features
            self.net[1].bias.zero_()
        self.loss = loss if loss is not None else nn.CrossEntropyLoss()
        # PyTorch's CPU log-softmax over a last dimension of 10 is a scalar loop; cross-entropy can take
        # the logits as one (N, C, d1) sample instead (the same mean over the same terms), 8x faster.
        self._batch_major = isinstance(self.loss, nn.CrossEntropyLoss)
        self.lr, self.weight_decay = lr, weight_decay
        self._optimizer: torch.optim.SGD | None = None

    @property
    def optimizer(self) -> torch.optim.SGD:
        """Made on first use: building it imports torch's compiler stack (2 s here), which a model
        loaded only to predict never needs."""
        if self._optimizer is None:
            # foreach=False: for two small tensors the per-tensor loop is the cheaper one on a CPU.
            self._optimizer = torch.optim.SGD(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay,
                                              foreach=False)
        return self._optimizer

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)

    def train_step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, one optimizer step; returns (loss, logits) before the update.

        Cross-entropy sees the logits as one sample of ``n_classes x batch`` (the ``(N, C, d1)``
        form ``CrossEntropyLoss`` takes), the same mean over the same terms: PyTorch's CPU
        log-softmax over a last dimension shorter than a vector register (10 classes) runs a
        scalar loop, 8x slower than over the batch dimension.
        """
        O = self.net(X)
        loss = self.loss(O.T.unsqueeze(0), y.unsqueeze(0)) if self._batch_major else self.loss(O, y)
        self.net.zero_grad(set_to_none=True)  # the module's: the optimizer's also opens a profiler range
        loss.backward()
        self.optimizer.step()
        return loss.detach(), O.detach()

    def set_lr(self, lr: float) -> None:
        """The step size of the next updates, as torch's LR schedulers set it: in the optimizer's param group."""
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

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
