"""The trained models as MLflow models: each train run logs its model file in two forms, the PyTorch
flavour and a class-predicting pyfunc; the registry and its champion take the pyfunc; and loading
either back for ``fmnist-predict``.

``mlflow.pytorch`` models (``model`` in a run) answer with raw logits
``[N, 10]``. The ``classifier`` of a run answers with classes: a pyfunc
wrapping the project's model file, whose ``predict`` returns one row per
image with the class index, its name and its probability. evaluate
registers the best run's ``classifier`` as it is.
"""

from __future__ import annotations

import contextlib
import logging
import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn

from .artifact_checks import (
    CLASSIFIER,
    FILES_MISSING_TAG,
    TORCH_MODEL,
    VersionFiles,
    checkpoint_artifact,
    listing,
    version_location,
)
from .calibration import with_temperature
from .checksums import sha256_hex
from .errors import one_line
from .features import Standardization, fold_into_linear
from .models import LoadedModel, ModelFileError, SoftmaxRegression, load_model
from .tracking import MODEL_SHA256_TAG, configure, log_bytes, store_lock, tracked_run

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
CHAMPION_TAG = "champion"
"""The run tag (``champion=true``) on the champion's run, and on no other."""
VAL_ACCURACY_TAG = "val_accuracy"
TEMPERATURE_TAG = "temperature"
"""The tag on a registered version: the temperature fitted on the validation split (``fmnist-predict --calibrated``)."""


def pip_requirements() -> list[str]:
    """The pinned stack the models need, stated rather than inferred (MLflow's inference re-imports
    the model in a subprocess, per model). This project is not among them: it is not on
    any index, so the classifier carries its code instead (:data:`CODE_PATHS`)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "numpy", "pandas", "mlflow")]


CODE_PATHS = [str(Path(__file__).resolve().parent)]
"""The ``softmax_regression`` package, logged with each classifier (``code/softmax_regression``): the pickled
classifier refers to its classes by module, and MLflow puts the model's ``code`` folder on ``sys.path`` when it
loads it, so the champion loads and serves where this project is not installed."""


def as_torch_module(model: SoftmaxRegression, standardization: Standardization | None = None) -> nn.Module:
    """Either implementation as the chapter's concise network with the same weights (what MLflow stores),
    taking pixels in [0, 1]: a standardization the model was trained behind is folded into the weights."""
    W, b = fold_into_linear(*model.weights(), standardization)
    net = nn.Sequential(nn.Flatten(), nn.Linear(W.shape[0], W.shape[1]))
    with torch.no_grad():
        net[1].weight.copy_(W.T)
        net[1].bias.copy_(b)
    return net.eval()


def log_torch_model(model: SoftmaxRegression, example_features: np.ndarray,
                    standardization: Standardization | None = None) -> None:
    """``mlflow.pytorch.log_model`` with an input example and the signature inferred from it.

    Saved in the ``pickle`` format: the default, ``pt2``, runs ``torch.export``, whose import
    and tracing cost seconds per model for a graph that is one ``nn.Linear``. The model still
    loads as the PyTorch flavour (``mlflow.pytorch.load_model``) and as a pyfunc returning logits.
    """
    module = as_torch_module(model, standardization)
    example = np.ascontiguousarray(example_features, dtype=np.float32)
    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    signature = mlflow.models.infer_signature(example, output)
    with _quiet("mlflow.pytorch"):
        mlflow.pytorch.log_model(module, name=TORCH_MODEL, input_example=example, signature=signature,
                                 pip_requirements=pip_requirements()[:2], serialization_format="pickle")


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


def log_models(model: SoftmaxRegression, checkpoint: bytes, example_features: np.ndarray,
               standardization: Standardization | None = None) -> None:
    """Into the active run, the model file ``checkpoint`` (of ``model``) in the two forms it is served in:
    ``model`` (the PyTorch flavour, logits) and ``classifier`` (classes; what evaluate registers)."""
    log_torch_model(model, example_features, standardization)
    log_classifier(checkpoint, example_features)


class FashionMnistClassifier(mlflow.pyfunc.PythonModel):
    """Class predictions from a project model file; input: float pixels in [0, 1], one row per image."""

    def load_context(self, context) -> None:
        self.loaded = load_model(context.artifacts["checkpoint"])

    def __getstate__(self) -> dict:
        """The pickle MLflow stores holds the class only: :meth:`load_context` reads the model from the
        model file, so a classifier loads whatever the model classes' internals become."""
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


def create_model_run(experiment_id: str, kind: str, checkpoint: bytes, example_features: np.ndarray,
                     tags: dict[str, str]) -> str:
    """A run for the model file ``checkpoint`` in a store that did not see it trained (a fresh one,
    another server): what the model file itself tells, the params that shaped it, the file, and the
    model in MLflow's PyTorch flavour; tagged with the file's SHA-256 so later steps find it."""
    sha256 = sha256_hex(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{kind}.pt"
        path.write_bytes(checkpoint)
        loaded = load_model(path)
    with tracked_run(experiment_id=experiment_id, run_name=kind,
                     tags={**tags, MODEL_SHA256_TAG: sha256, "created_from": "model file"}) as run:
        mlflow.log_params(loaded.params)
        log_bytes(checkpoint, checkpoint_artifact(kind))
        log_models(loaded.model, checkpoint, example_features, loaded.standardization)
    return run.info.run_id


def _run_is_active(client, run_id: str) -> bool:
    """False for a run deleted in the UI or removed for good (``mlflow gc``): its versions are out of the race."""
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except mlflow.exceptions.MlflowException:
        return False


def _competes(client, version, files: VersionFiles) -> bool:
    """A version takes part in the race for ``@champion`` while its run is there and its artifact store
    holds its files: a version whose run was deleted, or whose files were lost, is out, and its model
    file registers anew."""
    return _run_is_active(client, version.run_id) and not files.missing(version.version)


def _registered_version(client, registered_name: str, sha256: str, files: VersionFiles):
    """The earliest version of the model file that still competes (see :func:`_competes`)."""
    versions = [v for v in client.search_model_versions(f"name = '{registered_name}' and tags.{MODEL_SHA256_TAG} = "
                                                        f"'{sha256}'") if _competes(client, v, files)]
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _champion(client, registered_name: str):
    try:
        return client.get_model_version_by_alias(registered_name, CHAMPION_ALIAS)
    except mlflow.exceptions.MlflowException:  # no such model or alias yet
        return None


@dataclass(frozen=True)
class ChampionDecision:
    version: str
    """The model version of the candidate (new, or the one already registered for the same file)."""
    promoted: bool
    champion_version: str
    champion_val_accuracy: float


def register_and_promote(checkpoint: bytes, example_features: np.ndarray, registered_name: str, run_id: str,
                         val_accuracy: float, model_uri: str | None = None) -> ChampionDecision:
    """Register the model file as a version of ``registered_name``; ``@champion`` then points at the version
    with the best validation accuracy (the earliest of equals), so a new version takes it only by beating it.

    The accuracy is recorded on the version (tag ``val_accuracy``). A file
    registered before (same SHA-256) is not registered again and competes with
    the accuracy recorded then. Only the champion's run carries the tag
    ``champion=true``.

    Safe for concurrent writers on any store, with no lock: after each write
    a writer re-reads the versions, the alias and the tagged runs, and writes
    again until what it reads is right (:func:`_settle_champion`). A writer
    that acted on a stale read is corrected by its own re-read, or by that of
    whoever wrote after it. On a SQLite store :func:`store_lock` also
    serialises the writers (MLflow's SQLite store needs that for its first use).

    ``model_uri`` is the run's classifier where the caller found it already (:func:`run_classifier`);
    without it the run's classifier is looked up, and logged into the run where it has none.
    """
    client = mlflow.MlflowClient()
    sha256 = sha256_hex(checkpoint)
    files = VersionFiles(client, registered_name)
    if model_uri is None and _registered_version(client, registered_name, sha256, files) is None:  # outside the lock
        model_uri = _classifier_uri(client, checkpoint, example_features, run_id)
    with store_lock(mlflow.get_tracking_uri()):
        version = _registered_version(client, registered_name, sha256, files)
        registered_now = version is None
        if registered_now:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                registered = mlflow.register_model(
                    model_uri or _classifier_uri(client, checkpoint, example_features, run_id), registered_name,
                    tags={MODEL_SHA256_TAG: sha256, VAL_ACCURACY_TAG: repr(float(val_accuracy))})
            # two writers of one file at once both register it: the earliest version is the one
            version = _registered_version(client, registered_name, sha256, files) or registered
        candidate = float(version.tags.get(VAL_ACCURACY_TAG, val_accuracy))
        before = _champion(client, registered_name)
        champion = _settle_champion(client, registered_name, files)
    for number, missing in files.lost().items():
        _say_version_lost(client, registered_name, number, missing, sha256 if registered_now else None, version,
                          before, champion)
    best = float(champion.tags[VAL_ACCURACY_TAG])
    promoted = str(champion.version) == str(version.version) and (
        before is None or str(before.version) != str(version.version))
    if promoted:
        log.info("%s version %s (val accuracy %.4f) is now %s@%s", registered_name, version.version, candidate,
                 registered_name, CHAMPION_ALIAS)
    elif str(champion.version) == str(version.version):
        log.info("%s version %s (val accuracy %.4f) is %s@%s already", registered_name, version.version, candidate,
                 registered_name, CHAMPION_ALIAS)
    else:
        log.info("%s version %s (val accuracy %.4f) does not beat %s@%s, version %s (val accuracy %.4f)",
                 registered_name, version.version, candidate, registered_name, CHAMPION_ALIAS, champion.version, best)
    return ChampionDecision(str(version.version), promoted, str(champion.version), best)


SETTLE_ATTEMPTS = 50
"""Re-reads before a writer gives up on a registry that keeps changing under it."""


def _best_version(client, registered_name: str, files: VersionFiles):
    """The version with the best recorded validation accuracy, the earliest among equals, of those that
    compete (:func:`_competes`: a deleted run cannot carry the champion tag, and lost files cannot be served)."""
    versions = [v for v in client.search_model_versions(f"name = '{registered_name}'")
                if VAL_ACCURACY_TAG in v.tags and _competes(client, v, files)]
    return max(versions, key=lambda v: (float(v.tags[VAL_ACCURACY_TAG]), -int(v.version)))


def _settle_champion(client, registered_name: str, files: VersionFiles):
    """Point ``@champion`` and the ``champion=true`` run tag at the best version; re-read after every write
    until a read finds both right. Returns the champion version."""
    for attempt in range(SETTLE_ATTEMPTS):
        best = _best_version(client, registered_name, files)
        current = _champion(client, registered_name)
        tagged = _champion_tagged_runs(client, best.run_id)
        if current is not None and str(current.version) == str(best.version) and tagged == {best.run_id}:
            return best
        if current is None or str(current.version) != str(best.version):
            client.set_registered_model_alias(registered_name, CHAMPION_ALIAS, best.version)
        _move_champion_tag(client, best.run_id, current.run_id if current is not None else None)
        time.sleep(random.uniform(0, 0.05 * attempt))  # writers that keep colliding fall out of step
    raise RuntimeError(f"the champion of {registered_name} did not settle after {SETTLE_ATTEMPTS} attempts")


def _say_version_lost(client, registered_name: str, number: str, missing: list[str], sha256: str | None,
                      version, before, champion) -> None:
    """One line for a version whose files are gone, and what this registration did about it (``sha256``: the
    model file it registered anew, or None); the version is tagged with what it misses."""
    lost = client.get_model_version(registered_name, number)
    if lost.tags.get(FILES_MISSING_TAG) == listing(missing, limit=10):
        return  # said when it was found
    done = []
    if sha256 is not None and lost.tags.get(MODEL_SHA256_TAG) == sha256:
        done.append(f"registered its model file again as version {version.version}")
    if before is not None and str(before.version) == number:
        done.append(f"moved @{CHAMPION_ALIAS} to version {champion.version}")
    log.warning("%s version %s lost its files (%s missing from %s); %s", registered_name, number, listing(missing),
                version_location(client, registered_name, number),
                " and ".join(done) or f"it no longer competes for @{CHAMPION_ALIAS}")
    client.set_model_version_tag(registered_name, number, FILES_MISSING_TAG, listing(missing, limit=10))


def log_classifier(checkpoint_bytes: bytes, example_features: np.ndarray) -> str:
    """Log the class-predicting pyfunc of a model file into the active run, tagged with the file's SHA-256;
    returns its model URI."""
    example = np.ascontiguousarray(example_features, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _quiet("mlflow.pyfunc"):
        # MLflow suggests type hints and warns that integer outputs cannot hold missing values;
        # neither applies to a class index.
        warnings.simplefilter("ignore", UserWarning)
        checkpoint = Path(tmp) / "model.pt"
        checkpoint.write_bytes(checkpoint_bytes)
        classifier = FashionMnistClassifier()
        classifier.loaded = load_model(checkpoint)
        info = mlflow.pyfunc.log_model(
            name=CLASSIFIER, python_model=classifier, artifacts={"checkpoint": str(checkpoint)},
            input_example=example, signature=mlflow.models.infer_signature(
                example, classifier.predict(None, example), params={"temperature": 1.0}),
            pip_requirements=pip_requirements(), code_paths=CODE_PATHS,
            tags={MODEL_SHA256_TAG: sha256_hex(checkpoint_bytes)},
        )
    return info.model_uri


def run_classifier(client, run_id: str, sha256: str):
    """The ``classifier`` logged model of the model file ``sha256`` in run ``run_id`` (a READY one), or None:
    a run from before the train stages logged it, or one whose logging did not finish."""
    from mlflow.entities import LoggedModelStatus

    experiment_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(
        [experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{CLASSIFIER}' AND tags.{MODEL_SHA256_TAG} = '{sha256}'")
    return next((m for m in found if m.status == LoggedModelStatus.READY), None)


def _classifier_uri(client, checkpoint: bytes, example_features: np.ndarray, run_id: str) -> str:
    """The model URI of the run's classifier for the model file; logged into the run now where it has none."""
    found = run_classifier(client, run_id, sha256_hex(checkpoint))
    if found is not None:
        return found.model_uri
    with tracked_run(run_id=run_id):
        return log_classifier(checkpoint, example_features)


def _move_champion_tag(client, new_run_id: str, old_run_id: str | None) -> None:
    """Tag the champion's run ``champion=true`` and take the tag off every other run that carries it."""
    stale = ({old_run_id} if old_run_id else set()) | _champion_tagged_runs(client, new_run_id)
    for run_id in stale - {new_run_id}:
        try:
            client.delete_tag(run_id, CHAMPION_TAG)
        except mlflow.exceptions.MlflowException:  # the run or its tag is gone already
            pass
    client.set_tag(new_run_id, CHAMPION_TAG, "true")


def _champion_tagged_runs(client, run_id: str) -> set[str]:
    """The ids of the runs tagged ``champion=true`` in the experiment of ``run_id``."""
    experiment_id = client.get_run(run_id).info.experiment_id
    return {r.info.run_id for r in client.search_runs([experiment_id], filter_string=f"tags.{CHAMPION_TAG} = 'true'",
                                                      max_results=1000)}


STORE_PACKAGES = {"botocore": "boto3", "boto3": "boto3", "google": "google-cloud-storage",
                  "azure": "azure-storage-blob", "pyarrow": "pyarrow", "paramiko": "paramiko", "pysftp": "pysftp"}
"""The package to install for the module an artifact store's client imports."""


def registered_version(source: str):
    """The registered version a ``models:/<name>@<alias>`` or ``models:/<name>/<n>`` URI names, or None (another
    URI, or no such version: MLflow's own message names it when loading)."""
    rest = source[len("models:/"):] if source.startswith("models:/") else ""
    name, alias = rest.split("@", 1) if "@" in rest else (rest.rsplit("/", 1) + [""])[:2]
    if not name or not alias or name.startswith("m-"):
        return None
    client = mlflow.MlflowClient()
    try:
        return client.get_model_version(name, alias) if alias.isdigit() else client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def version_temperature(source: str) -> float:
    """The temperature evaluate recorded on the registered version of a ``models:/`` URI (tag ``temperature``)."""
    found = registered_version(source)
    if found is None or TEMPERATURE_TAG not in found.tags:
        raise ModelFileError(f"{source} carries no temperature (tag {TEMPERATURE_TAG!r}, set by evaluate): run "
                             "the project's evaluate stage again, or give --temperature")
    return float(found.tags[TEMPERATURE_TAG])


def _check_version_files(source: str) -> None:
    """Fail naming the version and the files, where a ``models:/`` URI resolves to a version whose artifact
    store lost its files (MLflow would say ``No such artifact: ''``)."""
    found = registered_version(source)
    if found is None:
        return
    client, name, version = mlflow.MlflowClient(), found.name, found.version
    missing = VersionFiles(client, name).missing(version)
    if missing:
        raise ModelFileError(
            f"cannot load {source}: version {version} of {name} lost its files ({listing(missing)} missing from "
            f"{version_location(client, name, version)}); run the project's evaluate stage again (forced: "
            f"its inputs did not change) to register its model files again and move @{CHAMPION_ALIAS} to a version "
            "that has them")


def load_model_uri(source: str, root: str | Path = ".") -> LoadedModel:
    """The project model behind an MLflow URI (``models:/name@champion``, ``runs:/<id>/classifier``);
    without ``MLFLOW_TRACKING_URI`` the store is ``mlflow.db`` in ``root``, which must exist (a reader
    creates no store). Another URI (``s3://...``, a folder) is read without a tracking store."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (migrating a store) are not ours to print
    store = None
    if source.startswith(("models:/", "runs:/")):
        store = configure(root, existing=True)
        _check_version_files(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # see FashionMnistClassifier
            inner = mlflow.pyfunc.load_model(source).unwrap_python_model()
    except mlflow.exceptions.MlflowException as exc:
        where = f" from MLflow store {store}" if store else ""
        raise ModelFileError(f"cannot load {source}{where}: {one_line(exc)}") from None
    except ImportError as exc:  # an artifact store whose client library is not installed (s3://, gs://, ...)
        missing = (exc.name or str(exc)).split(".")[0]
        package = STORE_PACKAGES.get(missing, missing)
        raise ModelFileError(f"cannot load {source}: reading its artifacts needs the Python package "
                             f"{package!r}, which is not installed (pip install {package})") from None
    if not isinstance(inner, FashionMnistClassifier):
        raise ModelFileError(f"{source} is not a Fashion-MNIST classifier logged by this project")
    return inner.loaded
