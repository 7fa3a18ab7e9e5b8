"""The MLflow run of each model file: the train stages open it, evaluate and report log into it.

A run is found by the SHA-256 of its model file (tag ``model_sha256``), in
whatever store MLflow points at; where that store has none (a fresh store,
another server), it is created from the model file.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from softmax_regression import tracking
from softmax_regression.artifact_checks import FILES_MISSING_TAG, checkpoint_artifact, listing, run_missing_files
from softmax_regression.atomic import StagedOutputs
from softmax_regression.checksums import sha256_hex
from softmax_regression.dataset import input_example

from . import paths
from .mlflow_runs import run_tags_for

log = logging.getLogger(__name__)


@contextlib.contextmanager
def training_run(experiment_id: str, kind: str, params_path: str | Path, model, checkpoint: bytes,
                 standardization, example_images: np.ndarray, files: dict[Path, bytes | str]) -> Iterator:
    """The run of a freshly trained model file, and the stage's outputs with it.

    Stages ``files`` (target: bytes or text) and ``checkpoint`` as the model
    file, opens the run tagged with the file's SHA-256 and yields it for the
    caller to log its params and metrics; then logs the model file and the
    model in both served forms, and renames the outputs into place inside the
    run. A run that says FINISHED has its outputs in place; a failure anywhere
    leaves the previous outputs as they were and the run FAILED or KILLED.
    """
    from softmax_regression.mlflow_models import log_models

    tags = {**run_tags_for(kind, params_path), tracking.MODEL_SHA256_TAG: sha256_hex(checkpoint)}
    with StagedOutputs() as outputs:
        outputs.write_bytes(paths.model_path(kind), checkpoint)
        for target, content in files.items():
            if isinstance(content, str):
                outputs.write_text(target, content)
            else:
                outputs.write_bytes(target, content)
        with tracking.tracked_run(experiment_id=experiment_id, run_name=kind, tags=tags) as run:
            yield run
            tracking.log_bytes(checkpoint, checkpoint_artifact(kind))
            log_models(model, checkpoint, input_example(example_images), standardization)
            outputs.commit()


def model_run_id(experiment_id: str, kind: str, checkpoint: bytes, example_images: np.ndarray,
                 params_path: str | Path) -> str:
    """The run of the model file ``checkpoint`` in the current store, found by its SHA-256; created from
    the file where the store has none, or where the run's artifact store lost a file it relies on (only
    then are torch and MLflow's model flavours imported, and the dataset hashed for the run's tags)."""
    import mlflow

    found = tracking.find_run(experiment_id, tracking.MODEL_SHA256_TAG, sha256_hex(checkpoint))
    missing = run_missing_files(mlflow.MlflowClient(), found.info.run_id, kind) if found is not None else []
    if found is not None and not missing:
        return found.info.run_id
    from softmax_regression.mlflow_models import create_model_run

    if found is None:
        log.info("no run of the %s model (sha256 %s) in this store: creating one", kind, sha256_hex(checkpoint)[:12])
    run_id = create_model_run(experiment_id, kind, checkpoint, input_example(example_images),
                              run_tags_for(kind, params_path))
    if missing:
        log.warning("run %s of the %s model lost its files (%s missing from %s): created run %s from %s",
                    found.info.run_id, kind, listing(missing), found.info.artifact_uri, run_id,
                    paths.model_path(kind))
        mlflow.MlflowClient().set_tag(found.info.run_id, FILES_MISSING_TAG, listing(missing, limit=10))
    return run_id


@dataclass(frozen=True)
class ModelRun:
    kind: str
    checkpoint: bytes
    """The model file's bytes."""
    run_id: str
    classifier: object | None
    """The run's ``classifier`` logged model (an MLflow ``LoggedModel``), or None where it has none."""

    @property
    def classifier_id(self) -> str | None:
        return self.classifier.model_id if self.classifier is not None else None


def model_runs(experiment_id: str, kinds: tuple[str, ...], example_images: np.ndarray,
               params_path: str | Path) -> dict[str, ModelRun]:
    """The run of each model file in ``models/`` (found, or created from the file) with its classifier."""
    import mlflow

    from softmax_regression.mlflow_models import run_classifier

    client = mlflow.MlflowClient()
    runs = {}
    for kind in kinds:
        checkpoint = paths.model_path(kind).read_bytes()
        run_id = model_run_id(experiment_id, kind, checkpoint, example_images, params_path)
        runs[kind] = ModelRun(kind, checkpoint, run_id, run_classifier(client, run_id, sha256_hex(checkpoint)))
    return runs


def crown_champion(run: ModelRun, val_accuracy: float, registered_name: str, example_images: np.ndarray,
                   temperature: float):
    """Register the model file of ``run`` as a version of ``registered_name``; ``@champion`` moves to it only
    if it beats the current champion's validation accuracy (see ``register_and_promote``). The version
    carries the temperature fitted on validation (tag ``temperature``), which calibrated predictions apply."""
    import mlflow

    from softmax_regression.mlflow_models import TEMPERATURE_TAG, register_and_promote

    model_uri = run.classifier.model_uri if run.classifier is not None else None
    decision = register_and_promote(run.checkpoint, input_example(example_images), registered_name, run.run_id,
                                    val_accuracy, model_uri)
    mlflow.MlflowClient().set_model_version_tag(registered_name, decision.version, TEMPERATURE_TAG,
                                                repr(float(temperature)))
    return decision
