"""The MLflow run of a model file, for the stages that log into runs they did not create (evaluate, report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from softmax_regression import tracking
from softmax_regression.checksums import sha256_hex

from .mlflow_runs import run_tags_for


def model_run_id(experiment_id: str, kind: str, checkpoint: bytes, example_features: np.ndarray,
                 params_path: str | Path) -> str:
    """The run of the model file ``checkpoint`` in the current store, found by its SHA-256; created from
    the file where the store has none (only then are torch and MLflow's model flavours imported, and
    the dataset hashed for the run's tags)."""
    found = tracking.find_run(experiment_id, tracking.MODEL_SHA256_TAG, sha256_hex(checkpoint))
    if found is not None:
        return found.info.run_id
    from softmax_regression.mlflow_models import create_model_run

    return create_model_run(experiment_id, kind, checkpoint, example_features,
                            run_tags_for(kind, params_path))
