"""The MLflow run of a model file: found by its SHA-256, its files checked, and created from the file where the
store has none (a fresh store, another server), by ``logged_models``: only then are torch and MLflow's model
flavours imported, so the report stage finds its runs without them.

MLflow keeps runs in its database and their files in the artifact store, with
nothing tying the two: a removed ``mlruns/`` or a bucket that lost objects
leaves runs that point at nothing, found only on loading. So a run's files are
listed before it is reused (test_faults.py).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from softmax_regression.checksums import sha256_hex
from softmax_regression.tracking.runs import MODEL_SHA256_TAG, find_run
from softmax_regression.tracking.store import write_racing

log = logging.getLogger(__name__)

CLASSIFIER, TORCH_MODEL = "classifier", "model"
"""The names of the two models a run logs."""
MODEL_FILES = {CLASSIFIER: ("MLmodel", "python_model.pkl", "artifacts/model.pt"), TORCH_MODEL: ("MLmodel", "data/model.pth")}
"""The files each logged model loads from (what ``mlflow.pyfunc.load_model`` opens)."""
FILES_MISSING_TAG = "files_missing"
"""The tag on a run or a registered version whose artifact store lost its files: which ones."""


def checkpoint_artifact(kind: str) -> str:
    """Where a run keeps its model file."""
    return f"checkpoint/{kind}.pt"


def missing_files(artifact_uri: str, files: Iterable[str]) -> list[str]:
    """The ``files`` (paths under ``artifact_uri``) the artifact store does not hold, each folder listed once.
    A folder that is gone lists as empty (local folders, proxied stores and buckets alike)."""
    from mlflow.artifacts import list_artifacts

    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in files:
        by_folder[path.rpartition("/")[0]].append(path)
    missing = []
    for folder, wanted in by_folder.items():
        uri = artifact_uri.rstrip("/") + (f"/{folder}" if folder else "")
        held = {info.path.rpartition("/")[2] for info in list_artifacts(artifact_uri=uri) if not info.is_dir}
        missing.extend(path for path in wanted if path.rpartition("/")[2] not in held)
    return missing


def listing(files: list[str], limit: int = 3) -> str:
    """Missing files for a one-line message: the first few, and how many more."""
    return ", ".join(files[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else "")


def run_missing_files(client, run_id: str, kind: str) -> list[str]:
    """What the run of a ``kind`` model file relies on and its artifact store no longer holds: the model file
    and the files of each model logged in the run (one the run never logged is not missing)."""
    run = client.get_run(run_id)
    missing = missing_files(run.info.artifact_uri, [checkpoint_artifact(kind)])
    for model in client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"):
        if model.name in MODEL_FILES:
            missing += [f"{model.name}/{p}" for p in missing_files(model.artifact_location, MODEL_FILES[model.name])]
    return missing


def run_classifier(client, run_id: str, sha256: str):
    """The READY ``classifier`` of the model file ``sha256`` in run ``run_id``, or None (a run from before the
    train stages logged it, or one whose logging did not finish)."""
    from mlflow.entities import LoggedModelStatus

    found = client.search_logged_models(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{CLASSIFIER}' AND tags.{MODEL_SHA256_TAG} = '{sha256}'")
    return next((m for m in found if m.status == LoggedModelStatus.READY), None)


@dataclass(frozen=True)
class ModelRun:
    kind: str
    checkpoint: bytes
    """The model file's bytes."""
    run_id: str
    classifier: object | None
    """The run's ``classifier`` (an MLflow ``LoggedModel``), or None where it has none."""

    @property
    def classifier_id(self) -> str | None:
        return self.classifier.model_id if self.classifier is not None else None


def model_run(experiment_id: str, kind: str, path: str | Path, example_features,
              tags: dict[str, str]) -> ModelRun:
    """The run of the model file at ``path`` in the current store, found by its SHA-256; created from the file
    where the store has none, or where the run's artifact store lost a file it relies on (then the old run is
    tagged with what it misses)."""
    checkpoint = Path(path).read_bytes()
    import mlflow

    client, sha256 = mlflow.MlflowClient(), sha256_hex(checkpoint)
    found = find_run(experiment_id, MODEL_SHA256_TAG, sha256)
    missing = run_missing_files(client, found.info.run_id, kind) if found is not None else []
    if found is not None and not missing:
        return ModelRun(kind, checkpoint, found.info.run_id, run_classifier(client, found.info.run_id, sha256))
    if found is None:
        log.info("no run of the %s model (sha256 %s) in this store: creating one", kind, sha256[:12])
    # torch and MLflow's model flavours, only now: importing them takes 1.0 s, and the report stage 2.7 s
    from softmax_regression.tracking.logged_models import create_model_run

    run_id = create_model_run(experiment_id, kind, checkpoint, example_features, tags)
    if missing:
        log.warning("run %s of the %s model lost its files (%s missing from %s): created run %s from %s",
                    found.info.run_id, kind, listing(missing), found.info.artifact_uri, run_id, path)
        write_racing(client.set_tag, found.info.run_id, FILES_MISSING_TAG, listing(missing, limit=10))
    return ModelRun(kind, checkpoint, run_id, run_classifier(client, run_id, sha256))
