"""Whether the artifact store still holds the files a run or a registered version relies on.

MLflow keeps runs, logged models and model versions in its database and
their files in the artifact store (``mlruns/``, or a server's proxied
folder or bucket). Nothing ties the two: a removed ``mlruns/`` or a bucket
that lost objects leaves records that point at nothing, and MLflow notices
only when something tries to load them. These checks list the store, so a
stage can notice first and say so. Only MLflow's client is imported (no torch).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

CLASSIFIER = "classifier"
"""The name of the class-predicting pyfunc in a run."""
TORCH_MODEL = "model"
"""The name of the PyTorch-flavour model in a run."""

MODEL_FILES = {
    CLASSIFIER: ("MLmodel", "python_model.pkl", "artifacts/model.pt"),
    TORCH_MODEL: ("MLmodel", "data/model.pth"),
}
"""The files each logged model of a run loads from (what ``mlflow.pyfunc.load_model`` opens)."""
FILES_MISSING_TAG = "files_missing"
"""The tag on a run or a registered version whose artifact store lost its files: which ones."""


def checkpoint_artifact(kind: str) -> str:
    """Where a run keeps its model file."""
    return f"checkpoint/{kind}.pt"


def missing_files(artifact_uri: str, files: Iterable[str]) -> list[str]:
    """The ``files`` (paths under ``artifact_uri``) that the artifact store does not hold; each folder is
    listed once. A folder that is gone lists as empty (local folders, proxied stores and buckets alike)."""
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


def run_missing_files(client, run_id: str, kind: str) -> list[str]:
    """What the run of a ``kind`` model file relies on and its artifact store no longer holds: the model
    file (``checkpoint/<kind>.pt``) and the files of each model logged in the run (``classifier/MLmodel``,
    ...). A model the run never logged is not missing (a run from before the classifier existed)."""
    run = client.get_run(run_id)
    missing = missing_files(run.info.artifact_uri, [checkpoint_artifact(kind)])
    logged = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'")
    for model in logged:
        if model.name in MODEL_FILES:
            missing.extend(f"{model.name}/{path}"
                           for path in missing_files(model.artifact_location, MODEL_FILES[model.name]))
    return missing


def version_location(client, name: str, version: str) -> str:
    """Where the files of a registered version live (its logged model's artifact folder)."""
    return client.get_model_version_download_uri(name, version)


def version_missing_files(client, name: str, version: str) -> list[str]:
    """The files of a registered version (a classifier) that its artifact store no longer holds."""
    return missing_files(version_location(client, name, version), MODEL_FILES[CLASSIFIER])


class VersionFiles:
    """:func:`version_missing_files` asked once per version: a registry read many times over in one
    decision (the champion's re-reads) lists each version's folder only once."""

    def __init__(self, client, name: str):
        self.client, self.name = client, name
        self._missing: dict[str, list[str]] = {}

    def missing(self, version) -> list[str]:
        key = str(version)
        if key not in self._missing:
            self._missing[key] = version_missing_files(self.client, self.name, key)
        return self._missing[key]

    def lost(self) -> dict[str, list[str]]:
        """The versions found without their files so far, with what each is missing."""
        return {version: files for version, files in self._missing.items() if files}


def listing(files: list[str], limit: int = 3) -> str:
    """Missing files for a one-line message: the first few, and how many more."""
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")
