"""The two models of the chapter, one interface, and the model file that carries what inference needs.

Both models expose ``logits(X)`` and ``train_step(X, y)``, so one training
loop serves both; each takes its loss (and the scratch one its gradient) as a
constructor argument, so the loss can be swapped.

A model file may also hold the ``baseline``: the same linear softmax model,
``softmax(X W + b)``, fitted by scikit-learn's L-BFGS instead of SGD
(:class:`~.scratch.FittedSoftmaxRegression`).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from .. import BASELINE_KIND, CLASS_NAMES, MODEL_KINDS
from ..features import Standardization, scale_pixels
from ..losses import LOSSES
from .concise import ConciseSoftmaxRegression
from .scratch import FittedSoftmaxRegression, ScratchSoftmaxRegression

FILE_FORMAT = "softmax-regression-model/1"


class SoftmaxRegression(Protocol):
    kind: str

    def logits(self, X: torch.Tensor) -> torch.Tensor: ...
    def train_step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def set_lr(self, lr: float) -> None: ...
    def train(self) -> None: ...
    def eval(self) -> None: ...
    def weights(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def state_dict(self) -> dict[str, torch.Tensor]: ...
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or not one of ours."""


def initial_weights(n_features: int, n_classes: int, init_std: float, generator: torch.Generator) -> torch.Tensor:
    """W ~ N(0, init_std^2), n_features x n_classes: the chapter's ``torch.normal(0, 0.01, (784, 10))``."""
    return torch.normal(0.0, init_std, size=(n_features, n_classes), generator=generator)


def build_model(kind: str, W: torch.Tensor, lr: float, weight_decay: float = 0.0,
                loss: str = "cross_entropy") -> SoftmaxRegression:
    """A model of ``kind`` starting from weights ``W`` (both kinds start equal from equal ``W``), trained on
    ``loss``, one of :data:`~softmax_regression.losses.LOSSES`."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
    if kind == "scratch":
        return ScratchSoftmaxRegression(W, lr=lr, weight_decay=weight_decay, loss_and_grad=LOSSES[loss].scratch)
    if kind == "concise":
        return ConciseSoftmaxRegression(W, lr=lr, weight_decay=weight_decay, loss=LOSSES[loss].concise())
    if kind == BASELINE_KIND:
        return FittedSoftmaxRegression(W, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA where present, else the CPU. The default, ``cpu``, gives the same bits on every
    machine; a GPU computes the same model to other bits."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available; use auto or cpu")
    return torch.device(device)


@dataclass
class LoadedModel:
    model: SoftmaxRegression
    kind: str
    side: int
    class_names: list[str]
    params: dict
    standardization: Standardization | None = None
    """The training split's statistics the model's inputs are standardized by (``data.normalize``)."""

    @property
    def n_features(self) -> int:
        return self.side * self.side

    def predict_proba(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, n_classes]`` for uint8 images ``[N, side*side]`` (or ``[N, side, side]``)."""
        return self.proba_of_scaled(scale_pixels(images_uint8.reshape(len(images_uint8), -1)))

    def proba_of_scaled(self, X: torch.Tensor) -> torch.Tensor:
        """Class probabilities for pixels already scaled to [0, 1], ``[N, side*side]``: standardized
        here as in training, when the model was trained on standardized inputs."""
        if X.shape[1] != self.n_features:
            raise ModelFileError(
                f"model expects {self.side}x{self.side} images ({self.n_features} pixels), got {X.shape[1]} pixels"
            )
        if self.standardization is not None:
            X = self.standardization.apply_(X.clone())
        self.model.eval()
        with torch.no_grad():
            return torch.softmax(self.model.logits(X), dim=1)


def model_bytes(model: SoftmaxRegression, side: int, params: dict,
                standardization: Standardization | None = None) -> bytes:
    """The model file's content: the weights plus what using them needs (classes, input shape,
    preprocessing, with the standardization's statistics if any) and the params that shaped them
    (and no other). Equal models give equal bytes."""
    preprocessing = {"resize": side, "dtype": "uint8", "scale": "divide by 255", "flatten": "row-major"}
    if standardization is not None:  # absent otherwise: a file without the option does not name it
        preprocessing["standardize"] = standardization.as_dict()
    checkpoint = {
        "format": FILE_FORMAT,
        "kind": model.kind,
        "state": model.state_dict(),
        "input_shape": [1, side, side],
        "class_names": list(CLASS_NAMES),
        "preprocessing": preprocessing,
        "params": dict(params),
    }
    buffer = io.BytesIO()  # to a buffer: torch.save names the archive after the (temporary) file otherwise
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def load_model(path: str | Path) -> LoadedModel:
    """A model file of :func:`model_bytes`, loaded with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles; the one line below is the message
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt archive
        raise ModelFileError(f"model file {path} is not a readable PyTorch file ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FILE_FORMAT:
        raise ModelFileError(f"model file {path} is not a {FILE_FORMAT} file")
    try:
        kind, side = checkpoint["kind"], int(checkpoint["input_shape"][-1])
        class_names, params = list(checkpoint["class_names"]), dict(checkpoint["params"])
        model = build_model(kind, torch.zeros(side * side, len(class_names)), lr=1.0)
        recorded = checkpoint["preprocessing"].get("standardize")
        standardization = None if recorded is None else Standardization.from_dict(recorded, side * side)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ModelFileError(f"model file {path} is damaged: {type(exc).__name__} {exc}") from None
    try:
        model.load_state_dict(checkpoint["state"])
    except (RuntimeError, KeyError) as exc:
        raise ModelFileError(f"model file {path}: weights do not fit a {kind} model of "
                             f"{side}x{side} inputs ({exc.__class__.__name__})") from None
    return LoadedModel(model, kind, side, class_names, params, standardization)
