"""The model file: a model's weights plus what using them needs, written and read without any model's code.

All three models are the same linear model, ``softmax(X W + b)``, trained three
ways; a file holds its ``W`` (n_features x n_classes) and ``b``, the kind that
trained them, and what using them needs. So evaluate, report, ``fmnist-predict``
and the MLflow models read any file without importing the code that trained it,
and an edit to one model's code reruns only that model's stage (its file then
reruns what reads it). The file holds tensors, strings and numbers only, so it
loads with ``weights_only=True`` (no code runs).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from softmax_regression import CLASS_NAMES
from softmax_regression.data.features import Standardization, scale_pixels
from softmax_regression.models import MODEL_KINDS

FILE_FORMAT = "softmax-regression-model/1"


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or not one of ours."""


def model_bytes(kind: str, W: torch.Tensor, b: torch.Tensor, side: int, params: dict,
                standardization: Standardization | None = None) -> bytes:
    """The model file's content: the weights plus what using them needs (classes, input shape,
    preprocessing, with the standardization's statistics if any) and the params that shaped them
    (and no other). Equal models give equal bytes."""
    preprocessing = {"resize": side, "dtype": "uint8", "scale": "divide by 255", "flatten": "row-major"}
    if standardization is not None:  # absent otherwise: a file without the option does not name it
        preprocessing["standardize"] = standardization.as_dict()
    checkpoint = {
        "format": FILE_FORMAT,
        "kind": kind,
        "state": {"W": W.detach().cpu().clone(memory_format=torch.contiguous_format), "b": b.detach().cpu().clone()},
        "input_shape": [1, side, side],
        "class_names": list(CLASS_NAMES),
        "preprocessing": preprocessing,
        "params": dict(params),
    }
    buffer = io.BytesIO()  # to a buffer: torch.save names the archive after the (temporary) file otherwise
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


@dataclass
class LoadedModel:
    """A model file's model, ready to predict: logits ``X W + b``."""

    W: torch.Tensor
    b: torch.Tensor
    kind: str
    side: int
    class_names: list[str]
    params: dict
    standardization: Standardization | None = None
    """The training split's statistics the model's inputs are standardized by (``data.normalize``)."""

    @property
    def n_features(self) -> int:
        return self.side * self.side

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """Logits for features ``X`` ``[N, side*side]`` (scaled, and standardized where the model was)."""
        return X @ self.W + self.b

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
        with torch.no_grad():
            return torch.softmax(self.logits(X), dim=1)


def load_model(path: str | Path) -> LoadedModel:
    """A model file of :func:`model_bytes`, loaded with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found")
    return model_from_bytes(path.read_bytes(), path)


CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE"}
"""The pickle opcodes that name a Python class or function, or call one: what weights-only loading refuses."""


def names_python_objects(data: bytes) -> bool:
    """Whether a pickle, or the pickles of a torch archive, names or calls a Python object: read opcode by
    opcode (``pickletools``), nothing run. A file torch refused for this is hostile or foreign, not damaged;
    one cut short fails to read before any such opcode and is not counted."""
    payloads = [data]
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                payloads = [archive.read(name) for name in archive.namelist() if name.endswith(".pkl")]
        except (zipfile.BadZipFile, OSError, EOFError):
            return False
    for payload in payloads:
        try:
            if any(opcode.name in CODE_OPCODES for opcode, _, _ in pickletools.genops(payload)):
                return True
        except Exception:  # a payload cut short, or not a pickle at all
            continue
    return False


def model_from_bytes(data: bytes, path: str | Path) -> LoadedModel:
    """The model of a model file's content ``data``; errors name ``path``."""
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles; the one line below is the message
            warnings.simplefilter("ignore")
            checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt archive
        if isinstance(exc, pickle.UnpicklingError) and names_python_objects(data):
            raise ModelFileError(f"model file {path} holds objects that could run code (Python classes or "
                                 "functions, which torch's weights-only loader refuses): not loaded") from None
        raise ModelFileError(f"model file {path} is not a readable PyTorch file ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FILE_FORMAT:
        raise ModelFileError(f"model file {path} is not a {FILE_FORMAT} file")
    try:
        kind, side = checkpoint["kind"], int(checkpoint["input_shape"][-1])
        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
        class_names, params = list(checkpoint["class_names"]), dict(checkpoint["params"])
        if kind == "concise" and "1.weight" in checkpoint["state"]:
            raise ModelFileError(f"model file {path} holds a concise model as nn.Linear's state, a layout this "
                                 "version reads no more; train the concise model again")
        W, b = checkpoint["state"]["W"], checkpoint["state"]["b"]
        recorded = checkpoint["preprocessing"].get("standardize")
        standardization = None if recorded is None else Standardization.from_dict(recorded, side * side)
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ModelFileError(f"model file {path} is damaged: {type(exc).__name__} {exc}") from None
    if not (isinstance(W, torch.Tensor) and isinstance(b, torch.Tensor)
            and tuple(W.shape) == (side * side, len(class_names)) and tuple(b.shape) == (len(class_names),)):
        raise ModelFileError(f"model file {path}: weights do not fit a {kind} model of {side}x{side} inputs")
    return LoadedModel(W.float(), b.float(), kind, side, class_names, params, standardization)
