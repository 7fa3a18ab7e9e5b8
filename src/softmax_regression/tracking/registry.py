"""The MLflow model registry: each evaluate registers the best model file's classifier, and ``@champion`` points
at the version with the best validation accuracy; ``fmnist-predict`` loads a model by its URI.

The registry has no compare-and-set, and evaluate may run on several machines
against one server at once. So after each write a writer re-reads the versions,
the alias and the champion's run tag, and writes again until what it reads is
right (:func:`_settle_champion`): a writer that acted on a stale read is
corrected by its own re-read, or by whoever wrote after it
(tests/integration/test_team_stack.py runs two sweeps at once on one server).
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from softmax_regression.checksums import sha256_hex
from softmax_regression.errors import one_line
from softmax_regression.evaluation import TEMPERATURE_RANGE
from softmax_regression.models.file import LoadedModel, ModelFileError, load_model
from softmax_regression.tracking.logged_models import log_classifier
from softmax_regression.tracking.model_runs import (
    CLASSIFIER,
    FILES_MISSING_TAG,
    MODEL_FILES,
    ModelRun,
    listing,
    missing_files,
    run_classifier,
)
from softmax_regression.tracking.runs import MODEL_SHA256_TAG, tracked_run
from softmax_regression.tracking.store import configure, relocate_copied_store, store_lock, write_racing

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
CHAMPION_TAG = "champion"
"""The run tag (``champion=true``) on the champion's run, and on no other."""
VAL_ACCURACY_TAG = "val_accuracy"
TEMPERATURE_TAG = "temperature"
"""The tag on a registered version: the temperature fitted on the validation split (``fmnist-predict --calibrated``)."""
SETTLE_ATTEMPTS = 50
"""Re-reads before a writer gives up on a registry that keeps changing under it."""


def version_location(client, name: str, version: str) -> str:
    """Where the files of a registered version live (its logged model's artifact folder)."""
    return client.get_model_version_download_uri(name, version)


class VersionFiles:
    """What each version's artifact store lost, listed once per version: one decision reads the registry many
    times over (the champion's re-reads)."""

    def __init__(self, client, name: str):
        self.client, self.name = client, name
        self._missing: dict[str, list[str]] = {}

    def missing(self, version) -> list[str]:
        key = str(version)
        if key not in self._missing:
            self._missing[key] = missing_files(version_location(self.client, self.name, key), MODEL_FILES[CLASSIFIER])
        return self._missing[key]

    def lost(self) -> dict[str, list[str]]:
        """The versions found without their files so far, with what each is missing."""
        return {version: files for version, files in self._missing.items() if files}


def _competes(client, version, files: VersionFiles) -> bool:
    """A version races for ``@champion`` while its run exists (not deleted in the UI or by ``mlflow gc``) and its
    artifact store holds its files; a version out of the race has its model file registered anew."""
    try:
        active = client.get_run(version.run_id).info.lifecycle_stage == "active"
    except mlflow.exceptions.MlflowException:
        active = False
    return active and not files.missing(version.version)


def _registered_version(client, name: str, sha256: str, files: VersionFiles):
    """The earliest competing version of the model file ``sha256``, or None."""
    versions = [v for v in client.search_model_versions(f"name = '{name}' and tags.{MODEL_SHA256_TAG} = '{sha256}'")
                if _competes(client, v, files)]
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _champion(client, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except mlflow.exceptions.MlflowException:  # no such model or alias yet
        return None


def _settle_champion(client, name: str, files: VersionFiles):
    """Point ``@champion`` and the ``champion=true`` run tag at the best competing version (best recorded
    validation accuracy, the earliest among equals); re-read after every write until a read finds both right."""
    for attempt in range(SETTLE_ATTEMPTS):
        best = max((v for v in client.search_model_versions(f"name = '{name}'")
                    if VAL_ACCURACY_TAG in v.tags and _competes(client, v, files)),
                   key=lambda v: (float(v.tags[VAL_ACCURACY_TAG]), -int(v.version)))
        current = _champion(client, name)
        experiment_id = client.get_run(best.run_id).info.experiment_id
        tagged = {r.info.run_id for r in client.search_runs([experiment_id], f"tags.{CHAMPION_TAG} = 'true'",
                                                            max_results=1000)}
        if current is not None and str(current.version) == str(best.version) and tagged == {best.run_id}:
            return best
        if current is None or str(current.version) != str(best.version):
            write_racing(client.set_registered_model_alias, name, CHAMPION_ALIAS, best.version)
        for run_id in (tagged | ({current.run_id} if current is not None else set())) - {best.run_id}:
            try:
                client.delete_tag(run_id, CHAMPION_TAG)
            except mlflow.exceptions.MlflowException:  # the run or its tag is gone already
                pass
        write_racing(client.set_tag, best.run_id, CHAMPION_TAG, "true")
        time.sleep(random.uniform(0, 0.05 * attempt))  # writers that keep colliding fall out of step
    raise RuntimeError(f"the champion of {name} did not settle after {SETTLE_ATTEMPTS} attempts")


@dataclass(frozen=True)
class ChampionDecision:
    version: str
    """The model version of the candidate (new, or the one already registered for the same file)."""
    promoted: bool
    champion_version: str
    champion_val_accuracy: float


def _classifier_uri(client, run: ModelRun, example_features: np.ndarray) -> str:
    """The run's classifier, logged into the run now where it has none."""
    found = run.classifier or run_classifier(client, run.run_id, sha256_hex(run.checkpoint))
    if found is not None:
        return found.model_uri
    with tracked_run(run_id=run.run_id):
        return log_classifier(run.checkpoint, example_features)


def register_and_promote(run: ModelRun, example_features: np.ndarray, name: str, val_accuracy: float,
                         temperature: float) -> ChampionDecision:
    """Register the classifier of ``run``'s model file as a version of ``name`` (tags: its SHA-256, the validation
    accuracy, the ``temperature`` fitted on validation); ``@champion`` then points at the best version, so a new
    one takes it only by beating it. A file registered before competes with the accuracy recorded then. On a
    SQLite store :func:`store_lock` also serialises the writers."""
    client, sha256 = mlflow.MlflowClient(), sha256_hex(run.checkpoint)
    files = VersionFiles(client, name)
    model_uri = None
    if _registered_version(client, name, sha256, files) is None:  # outside the lock: it may log a classifier
        model_uri = _classifier_uri(client, run, example_features)
    with store_lock(mlflow.get_tracking_uri()):
        version = _registered_version(client, name, sha256, files)
        registered_now = version is None
        if registered_now:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                registered = mlflow.register_model(model_uri or _classifier_uri(client, run, example_features), name,
                                                   tags={MODEL_SHA256_TAG: sha256,
                                                         VAL_ACCURACY_TAG: repr(float(val_accuracy))})
            # two writers of one file at once both register it: the earliest version is the one
            version = _registered_version(client, name, sha256, files) or registered
        write_racing(client.set_model_version_tag, name, version.version, TEMPERATURE_TAG, repr(float(temperature)))
        candidate = float(version.tags.get(VAL_ACCURACY_TAG, val_accuracy))
        before = _champion(client, name)
        champion = _settle_champion(client, name, files)
    for number, missing in files.lost().items():
        _say_version_lost(client, name, number, missing, sha256 if registered_now else None, version, before, champion)
    best = float(champion.tags[VAL_ACCURACY_TAG])
    promoted = (str(champion.version) == str(version.version)
                and (before is None or str(before.version) != str(version.version)))
    if promoted:
        log.info("%s version %s (val accuracy %.4f) is now %s@%s", name, version.version, candidate, name,
                 CHAMPION_ALIAS)
    elif str(champion.version) == str(version.version):
        log.info("%s version %s (val accuracy %.4f) is %s@%s already", name, version.version, candidate, name,
                 CHAMPION_ALIAS)
    else:
        log.info("%s version %s (val accuracy %.4f) does not beat %s@%s, version %s (val accuracy %.4f)",
                 name, version.version, candidate, name, CHAMPION_ALIAS, champion.version, best)
    return ChampionDecision(str(version.version), promoted, str(champion.version), best)


def _say_version_lost(client, name: str, number: str, missing: list[str], sha256: str | None, version, before,
                      champion) -> None:
    """One line, once, for a version whose files are gone, and what this registration did about it (``sha256``:
    the model file it registered anew, or None); the version is tagged with what it misses."""
    lost = client.get_model_version(name, number)
    if lost.tags.get(FILES_MISSING_TAG) == listing(missing, limit=10):
        return  # said when it was found
    done = []
    if sha256 is not None and lost.tags.get(MODEL_SHA256_TAG) == sha256:
        done.append(f"registered its model file again as version {version.version}")
    if before is not None and str(before.version) == number:
        done.append(f"moved @{CHAMPION_ALIAS} to version {champion.version}")
    log.warning("%s version %s lost its files (%s missing from %s); %s", name, number, listing(missing),
                version_location(client, name, number),
                " and ".join(done) or f"it no longer competes for @{CHAMPION_ALIAS}")
    write_racing(client.set_model_version_tag, name, number, FILES_MISSING_TAG, listing(missing, limit=10))


def registered_version(source: str):
    """The registered version a ``models:/<name>@<alias>`` or ``models:/<name>/<n>`` URI names, or None (another
    URI, or no such version: MLflow's own message names it when loading)."""
    rest = source[len("models:/"):] if source.startswith("models:/") else ""
    name, alias = rest.split("@", 1) if "@" in rest else (rest.rsplit("/", 1) + [""])[:2]
    if not name or not alias or name.startswith("m-"):
        return None
    client = mlflow.MlflowClient()
    try:
        if alias.isdigit():
            return client.get_model_version(name, alias)
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def calibrated_version(source: str, root: str | Path = ".") -> tuple[str, float]:
    """A ``models:/<name>@<alias>`` (or ``/<n>``) URI pinned to the version it names now, and the temperature
    evaluate recorded on that version (tag ``temperature``, see :func:`load_model_uri` for the store): the
    weights and the temperature of one version, however evaluate elsewhere moves the alias meanwhile."""
    reader_store(root)
    found = registered_version(source)
    if found is None:
        load_model_uri(source, root)  # no such version: MLflow's own message names it; else a logged model's URI
    raw = found.tags.get(TEMPERATURE_TAG) if found is not None else None
    if raw is None:
        raise ModelFileError(f"{source} carries no temperature (tag {TEMPERATURE_TAG!r}, set by evaluate on the "
                             "versions it registers): run the project's evaluate stage again, or give --temperature "
                             "instead of --calibrated")
    try:
        temperature = float(raw)
    except ValueError:
        temperature = math.nan
    low, high = TEMPERATURE_RANGE
    if not low <= temperature <= high:  # NaN too
        raise ModelFileError(f"{source}: version {found.version} of {found.name} carries the temperature {raw!r} "
                             f"(tag {TEMPERATURE_TAG!r}), not a number from {low} to {high}: run the project's "
                             "evaluate stage again, or give --temperature instead of --calibrated")
    return f"models:/{found.name}/{found.version}", temperature


def reader_store(root: str | Path) -> str:
    """The store a reader of ``models:/`` and ``runs:/`` URIs opens: ``MLFLOW_TRACKING_URI``, else ``mlflow.db``
    in ``root``, which must exist (a reader creates no store); a copied or moved project reads its own
    ``mlruns/``, not the original's."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (migrating a store) are not ours to print
    store = configure(root, existing=True)
    relocate_copied_store(store, root)
    return store


STORE_PACKAGES = {"botocore": "boto3", "boto3": "boto3", "google": "google-cloud-storage",
                  "azure": "azure-storage-blob", "pyarrow": "pyarrow", "paramiko": "paramiko", "pysftp": "pysftp"}
"""The package to install for the module an artifact store's client imports."""


def load_model_uri(source: str, root: str | Path = ".") -> LoadedModel:
    """The project model behind an MLflow URI (``models:/name@champion``, ``runs:/<id>/classifier``); without
    ``MLFLOW_TRACKING_URI`` the store is ``mlflow.db`` in ``root``, which must exist (a reader creates no store).
    Another URI (``s3://...``, a folder) is read without a tracking store."""
    store = None
    if source.startswith(("models:/", "runs:/")):
        store = reader_store(root)
        found = registered_version(source)
        missing = VersionFiles(mlflow.MlflowClient(), found.name).missing(found.version) if found else []
        if missing:  # MLflow would say ``No such artifact: ''``
            raise ModelFileError(
                f"cannot load {source}: version {found.version} of {found.name} lost its files ({listing(missing)} "
                f"missing from {version_location(mlflow.MlflowClient(), found.name, found.version)}); run the "
                "project's evaluate stage again (forced: its inputs did not change) to register its model files "
                f"again and move @{CHAMPION_ALIAS} to a version that has them")
    try:  # the classifier's model file, read as a model file: no pickle of the classifier is loaded, so a
        # version logged by an older layout of this code loads too, and nothing stored runs
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
            if not (folder / "artifacts" / "model.pt").is_file():
                raise ModelFileError(f"{source} is not a Fashion-MNIST classifier logged by this project")
            return load_model(folder / "artifacts" / "model.pt")
    except mlflow.exceptions.MlflowException as exc:
        where = f" from MLflow store {store}" if store else ""
        raise ModelFileError(f"cannot load {source}{where}: {one_line(exc)}") from None
    except ImportError as exc:  # an artifact store whose client library is not installed (s3://, gs://, ...)
        module = (exc.name or str(exc)).split(".")[0]
        if module not in STORE_PACKAGES:
            raise
        raise ModelFileError(f"cannot load {source}: reading its artifacts needs the Python package "
                             f"{STORE_PACKAGES[module]!r}, which is not installed (pip install "
                             f"{STORE_PACKAGES[module]})") from None
