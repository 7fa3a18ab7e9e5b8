"""The trained models in MLflow: each train run logs its model file, and the model in the two forms it is
served in; a store that never saw a model file trained gets a run created from the file.

``model`` (MLflow's PyTorch flavour) answers with logits ``[N, 10]``; ``classifier``
(a pyfunc wrapping the model file) answers with one row per image: the class
index, its name and its probability. The registry takes the classifier.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn

from softmax_regression.checksums import sha256_hex
from softmax_regression.data.features import fold_into_linear
from softmax_regression.evaluation import with_temperature
from softmax_regression.models.file import LoadedModel, load_model, model_from_bytes
from softmax_regression.tracking.model_runs import CLASSIFIER, TORCH_MODEL, checkpoint_artifact
from softmax_regression.tracking.runs import MODEL_SHA256_TAG, log_bytes, tracked_run

log = logging.getLogger(__name__)


CODE_PATHS = [str(Path(__file__).resolve().parents[1])]
"""The ``softmax_regression`` package, logged with each classifier (``code/softmax_regression``): the pickled
classifier refers to its class by module, and MLflow puts the model's ``code`` folder on ``sys.path`` when it
loads it, so the champion loads and serves where this project is not installed."""


def pip_requirements() -> list[str]:
    """The pinned stack the models need, stated rather than inferred (MLflow's inference re-imports the model
    in a subprocess, per model). Not this project, which is on no index: the classifier carries its code."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "numpy", "pandas", "mlflow")]


class FashionMnistClassifier(mlflow.pyfunc.PythonModel):
    """Class predictions from a project model file; input: float pixels in [0, 1], one row per image."""

    def load_context(self, context) -> None:
        self.loaded = load_model(context.artifacts["checkpoint"])

    def __getstate__(self) -> dict:
        """The pickle MLflow stores holds the class only: :meth:`load_context` reads the model file."""
        return {key: value for key, value in self.__dict__.items() if key != "loaded"}

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        """One row per image; ``params={"temperature": T}`` divides the logits by ``T`` (the version's tag
        ``temperature``: calibrated probabilities, the same classes)."""
        pixels = np.asarray(model_input, dtype=np.float32)
        probabilities = self.loaded.proba_of_scaled(torch.from_numpy(pixels.reshape(len(pixels), -1))).numpy()
        temperature = float((params or {}).get("temperature", 1.0))
        if temperature != 1.0:
            probabilities = with_temperature(probabilities, temperature)
        classes = probabilities.argmax(axis=1)
        return pd.DataFrame({
            "class": classes.astype(np.int64),
            "label": [self.loaded.class_names[c] for c in classes],
            "probability": probabilities[np.arange(len(classes)), classes].astype(np.float64),
        })


def as_torch_module(model: LoadedModel) -> nn.Module:
    """A model file's model as one ``nn.Linear`` with the same weights, taking rows of pixels in [0, 1]: a
    standardization the model was trained behind is folded into the weights."""
    W, b = fold_into_linear(model.W, model.b, model.standardization)
    linear = nn.Linear(*W.shape)
    with torch.no_grad():
        linear.weight.copy_(W.T)
        linear.bias.copy_(b)
    return linear.eval()


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from an MLflow flavour's logger while it logs our model: its warning that pickles run code
    on load (this is our own model) and its INFO on validating the input example are not the stage's to print."""
    flavour_log = logging.getLogger(logger)
    level = flavour_log.level
    flavour_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        flavour_log.setLevel(level)


def log_classifier(checkpoint: bytes, example_features: np.ndarray) -> str:
    """Log the classifier of a model file into the active run, tagged with the file's SHA-256; returns its URI."""
    example = np.ascontiguousarray(example_features, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _quiet("mlflow.pyfunc"):
        # MLflow suggests type hints and warns that integer outputs cannot hold missing values: not for a class
        warnings.simplefilter("ignore", UserWarning)
        path = Path(tmp) / "model.pt"
        path.write_bytes(checkpoint)
        classifier = FashionMnistClassifier()
        classifier.loaded = load_model(path)
        return mlflow.pyfunc.log_model(
            name=CLASSIFIER, python_model=classifier, artifacts={"checkpoint": str(path)}, input_example=example,
            signature=mlflow.models.infer_signature(example, classifier.predict(None, example),
                                                    params={"temperature": 1.0}),
            pip_requirements=pip_requirements(), code_paths=CODE_PATHS, tags={MODEL_SHA256_TAG: sha256_hex(checkpoint)},
        ).model_uri


def log_model_file(kind: str, checkpoint: bytes, example_features: np.ndarray) -> None:
    """Into the active run: the model file of a ``kind`` model, its ``model`` (saved as a pickle: the default,
    ``pt2``, runs ``torch.export``, seconds per model for a graph that is one ``nn.Linear``) and its
    ``classifier``."""
    log_bytes(checkpoint, checkpoint_artifact(kind))
    module = as_torch_module(model_from_bytes(checkpoint, "model file"))
    example = np.ascontiguousarray(example_features, dtype=np.float32)
    with torch.no_grad():
        signature = mlflow.models.infer_signature(example, module(torch.from_numpy(example)).numpy())
    with _quiet("mlflow.pytorch"):
        mlflow.pytorch.log_model(module, name=TORCH_MODEL, input_example=example, signature=signature,
                                 pip_requirements=pip_requirements()[:2], serialization_format="pickle")
    log_classifier(checkpoint, example_features)


def create_model_run(experiment_id: str, kind: str, checkpoint: bytes, example_features: np.ndarray,
                     tags: dict[str, str]) -> str:
    """A run for a model file in a store that did not see it trained (a fresh one, another server): the params
    the file records, the file and its two models, tagged with its SHA-256 so later steps find it."""
    loaded = model_from_bytes(checkpoint, f"{kind}.pt")
    with tracked_run(experiment_id=experiment_id, run_name=kind,
                     tags={**tags, MODEL_SHA256_TAG: sha256_hex(checkpoint), "created_from": "model file"}) as run:
        mlflow.log_params(loaded.params)
        log_model_file(kind, checkpoint, example_features)
    return run.info.run_id


