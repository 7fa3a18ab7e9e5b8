"""The trained models as MLflow models: the PyTorch flavour for the train runs, a class-predicting
pyfunc for the registry, and loading either back for ``fmnist-predict``.

``mlflow.pytorch`` models answer with raw logits ``[N, 10]``. The registered
model answers with classes: a pyfunc wrapping the project's model file, whose
``predict`` returns one row per image with the class index, its name and
its probability.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn

from .models import LoadedModel, ModelFileError, SoftmaxRegression, load_model
from .tracking import configure, store_lock

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"


def pip_requirements() -> list[str]:
    """The pinned stack the models need, stated rather than inferred (MLflow's inference re-imports
    the model in a subprocess: about 10 s per model here)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "numpy", "pandas", "mlflow")] + [
        f"softmax-regression=={version('softmax-regression')}"]


def as_torch_module(model: SoftmaxRegression) -> nn.Module:
    """Either implementation as the chapter's concise network with the same weights (what MLflow stores)."""
    W, b = model.weights()
    net = nn.Sequential(nn.Flatten(), nn.Linear(W.shape[0], W.shape[1]))
    with torch.no_grad():
        net[1].weight.copy_(W.T)
        net[1].bias.copy_(b)
    return net.eval()


def log_torch_model(model: SoftmaxRegression, example_features: np.ndarray) -> None:
    """``mlflow.pytorch.log_model`` with an input example and the signature inferred from it."""
    module = as_torch_module(model)
    example = np.ascontiguousarray(example_features, dtype=np.float32)
    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    signature = mlflow.models.infer_signature(example, output)
    mlflow.pytorch.log_model(module, name="model", input_example=example, signature=signature,
                             pip_requirements=pip_requirements()[:2])


class FashionMnistClassifier(mlflow.pyfunc.PythonModel):
    """Class predictions from a project model file; input: float pixels in [0, 1], one row per image."""

    def load_context(self, context) -> None:
        self.loaded = load_model(context.artifacts["checkpoint"])

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        pixels = np.asarray(model_input, dtype=np.float32)
        features = torch.from_numpy(pixels.reshape(len(pixels), -1))
        probabilities = torch.softmax(self.loaded.model.logits(features), dim=1).detach().numpy()
        classes = probabilities.argmax(axis=1)
        return pd.DataFrame({
            "class": classes.astype(np.int64),
            "label": [self.loaded.class_names[c] for c in classes],
            "probability": probabilities[np.arange(len(classes)), classes].astype(np.float64),
        })


def log_and_register_classifier(checkpoint_bytes: bytes, example_features: np.ndarray, registered_name: str,
                                run_id: str) -> str:
    """Log the class-predicting pyfunc into ``run_id``, register it, point the ``champion`` alias at it.

    Returns the new model version.
    """
    example = np.ascontiguousarray(example_features, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "model.pt"
        checkpoint.write_bytes(checkpoint_bytes)
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # MLflow suggests type hints and warns that integer outputs cannot hold missing values;
            # neither applies to a class index.
            warnings.simplefilter("ignore", UserWarning)
            classifier = FashionMnistClassifier()
            classifier.loaded = load_model(checkpoint)
            info = mlflow.pyfunc.log_model(
                name="classifier", python_model=classifier, artifacts={"checkpoint": str(checkpoint)},
                input_example=example, signature=mlflow.models.infer_signature(example, classifier.predict(None, example)),
                pip_requirements=pip_requirements(),
            )
    with store_lock(mlflow.get_tracking_uri()):  # parallel sweeps register concurrently
        version = mlflow.register_model(info.model_uri, registered_name).version
        mlflow.MlflowClient().set_registered_model_alias(registered_name, CHAMPION_ALIAS, version)
    log.info("registered %s version %s as %s@%s", info.model_uri, version, registered_name, CHAMPION_ALIAS)
    return str(version)


def load_model_uri(source: str) -> LoadedModel:
    """The project model behind an MLflow URI (``models:/name@champion``, ``runs:/<id>/classifier``)."""
    configure()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # see FashionMnistClassifier
            inner = mlflow.pyfunc.load_model(source).unwrap_python_model()
    except mlflow.exceptions.MlflowException as exc:
        raise ModelFileError(f"cannot load {source}: {str(exc).splitlines()[0]}") from None
    if not isinstance(inner, FashionMnistClassifier):
        raise ModelFileError(f"{source} is not a Fashion-MNIST classifier logged by this project")
    return inner.loaded
