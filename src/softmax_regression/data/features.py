"""From pixels to the features a model sees: ``pixels / 255``, optionally standardized (``data.normalize``).

    x = pixels / 255                       the chapter's ToTensor: every feature in [0, 1]
    z = (x - mean) / std                   standardized, with mean and std of the training split only

``global`` uses one mean and one standard deviation over every pixel of every
training image (torchvision's ``Normalize((0.286,), (0.353,))`` for
Fashion-MNIST); ``per_pixel`` one pair per pixel position, as scikit-learn's
``StandardScaler`` does (a position that never changes keeps a scale of 1).
The statistics travel in the model file, so whoever uses the model
(``fmnist-predict``, the pyfunc, evaluate) applies the same transform.

A linear model on standardized features is a linear model on the raw ones:
``z W + b = x (W / std) + (b - (mean / std) W)``. :func:`fold_into_linear`
uses this to log a plain ``nn.Linear`` on ``[0, 1]`` pixels as the PyTorch flavour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from softmax_regression.data import NORMALIZATIONS


def scale_pixels(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels ``[N, d]`` to float32 in [0, 1], as ``ToTensor`` does per sample. Converted by numpy into
    a new array: an IDX file's pixels are read-only, and torch warns of sharing them."""
    return torch.from_numpy(np.ascontiguousarray(images_uint8, dtype=np.float32)).div_(255)


@dataclass(frozen=True)
class Standardization:
    """``z = (x - mean) / std`` on features ``x`` in [0, 1]; ``mean`` and ``std`` broadcast over rows."""

    mode: str
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, images_uint8: np.ndarray, mode: str, chunk: int = 8192) -> Standardization | None:
        """Statistics of ``images_uint8`` (the training split, ``[N, d]``) for ``mode``; None for ``none``.

        Sums in float64, chunk by chunk: the mean and the (population) standard
        deviation of the scaled pixels, exact to float32 and the same bits on every machine.
        """
        if mode == "none":
            return None
        if mode not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {mode!r}; expected one of {', '.join(NORMALIZATIONS)}")
        n, d = images_uint8.shape
        total, squares = np.zeros(d), np.zeros(d)
        for start in range(0, n, chunk):
            block = images_uint8[start:start + chunk].astype(np.float64) / 255
            total += block.sum(axis=0)
            squares += (block * block).sum(axis=0)
        if mode == "global":
            total, squares, n = np.array([total.sum()]), np.array([squares.sum()]), n * d
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
        std[std < 1e-6] = 1.0  # a constant feature is centred, not blown up
        return cls(mode, torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32)))

    def apply_(self, X: torch.Tensor) -> torch.Tensor:
        """Standardize features ``X`` ``[N, d]`` in place; returns ``X``."""
        return X.sub_(self.mean.to(X.device)).div_(self.std.to(X.device))

    def as_dict(self) -> dict:
        """What the model file records (tensors, so it loads with ``weights_only=True``)."""
        return {"mode": self.mode, "mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_dict(cls, recorded: dict, n_features: int) -> Standardization:
        mode, mean, std = recorded["mode"], recorded["mean"], recorded["std"]
        if mode not in NORMALIZATIONS[1:] or not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor):
            raise ValueError(f"standardization {mode!r} is not one this project writes")
        expected = 1 if mode == "global" else n_features
        if mean.shape != (expected,) or std.shape != (expected,) or not bool((std > 0).all()):
            raise ValueError(f"standardization statistics do not fit {n_features} features")
        return cls(mode, mean.float(), std.float())


def features(images_uint8: np.ndarray | torch.Tensor, standardization: Standardization | None,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """The model's input for uint8 images ``[N, d]``: scaled to [0, 1], then standardized if asked."""
    X = scale_pixels(images_uint8).to(device)
    return X if standardization is None else standardization.apply_(X)


def fold_into_linear(W: torch.Tensor, b: torch.Tensor, standardization: Standardization | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W', b')`` with ``x W' + b' = standardize(x) W + b`` for features ``x`` in [0, 1]."""
    if standardization is None:
        return W, b
    mean = standardization.mean.to(W).expand(W.shape[0])
    std = standardization.std.to(W).expand(W.shape[0])
    W_raw = W / std.unsqueeze(1)
    return W_raw, b - mean @ W_raw
