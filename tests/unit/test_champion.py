"""The champion rule of ``register_and_promote`` on a real MLflow SQLite store.

Each evaluated model file becomes a version of the registered model; the
alias ``champion`` moves to it only when its validation accuracy (tag
``val_accuracy`` on the version) beats the current champion's; a file with the
same SHA-256 (tag ``model_sha256``) is not registered twice; only the
champion's run carries the run tag ``champion=true``.

Logging the pyfunc takes seconds, so one store serves the module and the
scenario is a chain of module fixtures, one step each: ``first`` (empty
store), then ``worse``, then ``equal``, then ``better``. A test asks for the
step it checks, which runs the steps before it, so each test means the same
run alone or with the others. Each step records what the store held right
after it (a :class:`Snapshot`), so later steps cannot blur what an earlier
test checks. A test that needs a store of its own starts from a copy of an
empty one (:func:`empty_store_file`): MLflow creates its tables in a second
or more.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from softmax_regression.checksums import sha256_hex
from softmax_regression.models.file import load_model, model_bytes
from softmax_regression.tracking import runs
from softmax_regression.tracking import store as mlflow_store
from softmax_regression.tracking.logged_models import FashionMnistClassifier, log_classifier, log_model_file
from softmax_regression.tracking.model_runs import ModelRun, run_classifier
from softmax_regression.tracking.registry import (
    CHAMPION_ALIAS,
    TEMPERATURE_TAG,
    VAL_ACCURACY_TAG,
    ChampionDecision,
    register_and_promote,
)
from softmax_regression.training.loop import initial_weights
from support import PROJECT_ROOT, clean_env, inserted_first, tracking_store

EXPERIMENT = "champion-test"
REGISTERED = "fashion-mnist-champion-test"
SIDE = 28

FIRST_ACC = 0.8123456789012345  # not a short decimal: the tag must round-trip it exactly
WORSE_ACC = 0.75
TEMPERATURE = 0.875  # the temperature evaluate would have fitted (exact in binary, as the tag holds it)
BETTER_ACC = 0.875


# --- model files and the store ---------------------------------------------------------------------------------


def checkpoint(seed: int) -> bytes:
    """A valid, distinct model file: a scratch model from seeded weights (another seed, other bytes)."""
    W = initial_weights(SIDE * SIDE, 10, 0.01, torch.Generator().manual_seed(seed))
    return model_bytes("scratch", W, torch.zeros(10), SIDE, {"train.seed": seed})


def example_features(n: int = 5, seed: int = 0) -> np.ndarray:
    """Float32 pixels in [0, 1], one row per image."""
    return np.random.default_rng(seed).random((n, SIDE * SIDE), dtype=np.float32)


@dataclass(frozen=True)
class Store:
    root: Path
    uri: str
    experiment_id: str
    client: mlflow.MlflowClient


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_store_file):
    root = tmp_path_factory.mktemp("champion-store")
    shutil.copyfile(empty_store_file, root / "mlflow.db")
    with tracking_store(root) as uri:
        experiment = mlflow_store.experiment_id(EXPERIMENT, root)
        yield Store(root, uri, experiment, mlflow.MlflowClient())


def new_run(store: Store, name: str, data: bytes, classifier: bool = False) -> str:
    """A finished run for a model file, tagged with its SHA-256 as the train stage does; with ``classifier``
    holding the file's classifier too, as the train stage logs it."""
    with mlflow.start_run(experiment_id=store.experiment_id, run_name=name,
                          tags={runs.MODEL_SHA256_TAG: sha256_hex(data)}) as run:
        if classifier:
            log_classifier(data, example_features())
    return run.info.run_id


def champion_run_ids(client: mlflow.MlflowClient, experiment_id: str) -> set[str]:
    runs = client.search_runs([experiment_id], filter_string="tags.champion = 'true'", max_results=1000)
    return {r.info.run_id for r in runs}


@dataclass(frozen=True)
class Snapshot:
    """What the store holds for the registered model at one moment."""
    versions: dict[str, dict]  # version -> {"run_id": ..., "tags": {...}}
    alias: str | None  # the version @champion points at
    champion_runs: set[str]  # runs of the experiment tagged champion=true
    logged_models: int  # logged models of the experiment (each registration logs one pyfunc)

    @classmethod
    def take(cls, store: Store) -> "Snapshot":
        client = store.client
        versions = {str(v.version): {"run_id": v.run_id, "tags": dict(v.tags)}
                    for v in client.search_model_versions(f"name = '{REGISTERED}'")}
        aliases = client.get_registered_model(REGISTERED).aliases
        alias = str(aliases[CHAMPION_ALIAS]) if CHAMPION_ALIAS in aliases else None
        logged = client.search_logged_models([store.experiment_id], max_results=1000)
        return cls(versions, alias, champion_run_ids(client, store.experiment_id), len(logged))


@dataclass(frozen=True)
class Step:
    data: bytes
    run_id: str
    val_accuracy: float
    decision: ChampionDecision
    after: Snapshot


def promote(name: str, data: bytes, run_id: str, val_accuracy: float, classifier=None) -> ChampionDecision:
    """What evaluate does with the best model file: register it (its run's ``classifier`` where evaluate found
    one) and let it compete for ``@champion``."""
    return register_and_promote(ModelRun("scratch", data, run_id, classifier), example_features(), name, val_accuracy,
                                TEMPERATURE)


def register(store: Store, data: bytes, run_id: str, val_accuracy: float) -> Step:
    decision = promote(REGISTERED, data, run_id, val_accuracy)
    return Step(data, run_id, float(val_accuracy), decision, Snapshot.take(store))


# --- the scenario, one step per fixture --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first(store) -> Step:
    """The first model on an empty registry (passed as a numpy float, as metrics often are)."""
    assert not store.client.search_registered_models(f"name = '{REGISTERED}'"), "the store must start empty"
    data = checkpoint(1)
    return register(store, data, new_run(store, "first", data), np.float64(FIRST_ACC))


@pytest.fixture(scope="module")
def worse(store, first) -> Step:
    data = checkpoint(2)
    return register(store, data, new_run(store, "worse", data), WORSE_ACC)


@pytest.fixture(scope="module")
def equal(store, worse) -> Step:
    """Another model file with exactly the champion's accuracy."""
    data = checkpoint(3)
    return register(store, data, new_run(store, "equal", data), FIRST_ACC)


@pytest.fixture(scope="module")
def better(store, equal) -> Step:
    data = checkpoint(4)
    return register(store, data, new_run(store, "better", data), BETTER_ACC)


# --- the tests -----------------------------------------------------------------------------------------------------


def test_first_registration_becomes_champion(store, first):
    assert first.decision == ChampionDecision(version="1", promoted=True, champion_version="1",
                                              champion_val_accuracy=FIRST_ACC)
    assert type(first.decision.champion_val_accuracy) is float
    after = first.after
    assert set(after.versions) == {"1"} and after.alias == "1"
    version = after.versions["1"]
    assert version["run_id"] == first.run_id, "the version comes from the run the caller passed"
    assert float(version["tags"][VAL_ACCURACY_TAG]) == FIRST_ACC, version["tags"]
    assert version["tags"][runs.MODEL_SHA256_TAG] == sha256_hex(first.data)
    assert after.champion_runs == {first.run_id}
    assert store.client.get_run(first.run_id).data.tags["champion"] == "true"
    # what get_model_version_by_alias answers, the next candidate is compared with
    champion = store.client.get_model_version_by_alias(REGISTERED, CHAMPION_ALIAS)
    assert str(champion.version) == "1" and float(champion.tags[VAL_ACCURACY_TAG]) == FIRST_ACC


def test_worse_model_is_registered_but_not_promoted(first, worse):
    assert worse.decision == ChampionDecision(version="2", promoted=False, champion_version="1",
                                              champion_val_accuracy=FIRST_ACC)
    after = worse.after
    assert set(after.versions) == {"1", "2"}
    assert after.versions["2"]["run_id"] == worse.run_id
    assert float(after.versions["2"]["tags"][VAL_ACCURACY_TAG]) == WORSE_ACC
    assert after.versions["2"]["tags"][runs.MODEL_SHA256_TAG] == sha256_hex(worse.data)
    assert after.alias == "1", "a worse model must not take the alias"
    assert after.champion_runs == {first.run_id}, "the champion tag stays on the champion's run only"


def test_equal_accuracy_does_not_take_the_alias(first, equal):
    assert equal.val_accuracy == FIRST_ACC
    assert equal.decision == ChampionDecision(version="3", promoted=False, champion_version="1",
                                              champion_val_accuracy=FIRST_ACC)
    after = equal.after
    assert set(after.versions) == {"1", "2", "3"}
    assert float(after.versions["3"]["tags"][VAL_ACCURACY_TAG]) == FIRST_ACC
    assert after.alias == "1", "a tie is not a win: the alias stays"
    assert after.champion_runs == {first.run_id}


def test_better_model_takes_the_alias_and_the_champion_tag(store, first, better):
    assert better.decision == ChampionDecision(version="4", promoted=True, champion_version="4",
                                               champion_val_accuracy=BETTER_ACC)
    after = better.after
    assert set(after.versions) == {"1", "2", "3", "4"}
    assert after.alias == "4"
    assert float(after.versions["4"]["tags"][VAL_ACCURACY_TAG]) == BETTER_ACC
    assert after.champion_runs == {better.run_id}, "exactly one run is the champion's"
    assert "champion" not in store.client.get_run(first.run_id).data.tags, "the old champion's run loses the tag"
    runs = store.client.search_runs([store.experiment_id], max_results=1000)
    assert [r.info.run_id for r in runs if r.data.tags.get("champion") == "true"] == [better.run_id]


def test_same_model_file_is_not_registered_twice(store, first, better):
    before = Snapshot.take(store)
    assert before.alias == "4"
    # the champion's file again, as a rerun of evaluate would pass it
    again = register(store, better.data, better.run_id, BETTER_ACC)
    assert again.decision == ChampionDecision(version="4", promoted=False, champion_version="4",
                                              champion_val_accuracy=BETTER_ACC)
    assert again.after == before, "nothing changes: no version, no logged model, same alias and tags"
    # an earlier, beaten file again, from another run
    other_run = new_run(store, "first-again", first.data)
    again = register(store, first.data, other_run, FIRST_ACC)
    assert again.decision == ChampionDecision(version="1", promoted=False, champion_version="4",
                                              champion_val_accuracy=BETTER_ACC)
    assert again.after == before, "the known file maps to version 1; nothing is logged into the new run"
    assert not store.client.search_logged_models([store.experiment_id],
                                                 filter_string=f"source_run_id = '{other_run}'")
    sha_versions = store.client.search_model_versions(
        f"name = '{REGISTERED}' and tags.{runs.MODEL_SHA256_TAG} = '{sha256_hex(first.data)}'")
    assert [str(v.version) for v in sha_versions] == ["1"]
    # the beaten file again, claiming a better accuracy than the champion's: it competes with the
    # accuracy recorded on its version, so the alias and the recorded accuracies stay consistent
    again = register(store, first.data, other_run, BETTER_ACC + 0.05)
    assert again.decision == ChampionDecision(version="1", promoted=False, champion_version="4",
                                              champion_val_accuracy=BETTER_ACC)
    assert again.after == before


def test_champion_loads_and_predicts_classes(store, better):
    assert better.after.alias == "4"
    features = example_features(n=5, seed=7)
    assert features.dtype == np.float32 and features.shape == (5, SIDE * SIDE)
    assert 0.0 <= features.min() and features.max() <= 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = mlflow.pyfunc.load_model(f"models:/{REGISTERED}@{CHAMPION_ALIAS}")
    assert isinstance(model.unwrap_python_model(), FashionMnistClassifier)
    predicted = model.predict(features)
    assert isinstance(predicted, pd.DataFrame)
    assert list(predicted.columns) == ["class", "label", "probability"]
    assert len(predicted) == 5

    path = store.root / "champion.pt"
    path.write_bytes(better.data)  # the champion's own file, loaded with the project's API
    loaded = load_model(path)
    with torch.no_grad():
        logits = loaded.logits(torch.from_numpy(features))
    probabilities = torch.softmax(logits, dim=1).numpy()
    expected = probabilities.argmax(axis=1)
    assert len(set(expected.tolist())) > 1, "a model that answers one class everywhere would prove little"
    np.testing.assert_array_equal(predicted["class"].to_numpy(), expected)
    assert predicted["label"].tolist() == [loaded.class_names[c] for c in expected]
    np.testing.assert_allclose(predicted["probability"].to_numpy(), probabilities.max(axis=1), rtol=1e-6)
    # the file behind the alias is the better model's
    assert better.after.versions["4"]["tags"][runs.MODEL_SHA256_TAG] == sha256_hex(better.data)


def test_a_model_uri_loads_its_model_file_and_runs_no_pickle_from_the_store(store, tmp_path):
    """What ``fmnist-predict`` loads from a ``runs:/`` or ``models:/`` URI is the model file inside the logged
    classifier, read weights-only: a classifier pickle replaced in the store by one that runs a command loads
    the same model, and the command never runs (docs/faults.md, "Loading trust")."""
    import os
    import pickle

    from softmax_regression.tracking.registry import load_model_uri

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = checkpoint(seed=11)
    run_id = new_run(store, "hostile store", data, classifier=True)
    classifier = run_classifier(store.client, run_id, sha256_hex(data))
    pickled = Path(classifier.artifact_location.removeprefix("file://")) / "python_model.pkl"
    assert pickled.is_file()
    pickled.write_bytes(pickle.dumps(Payload()))
    loaded = load_model_uri(f"runs:/{run_id}/classifier", store.root)
    (store.root / "hostile.pt").write_bytes(data)
    expected = load_model(store.root / "hostile.pt")
    assert torch.equal(loaded.W, expected.W) and torch.equal(loaded.b, expected.b)
    assert not marker.exists()
    with pytest.raises(AttributeError), warnings.catch_warnings():  # MLflow's loader unpickles it: it runs
        warnings.simplefilter("ignore")
        mlflow.pyfunc.load_model(f"runs:/{run_id}/classifier")
    assert marker.exists()


def test_the_champion_takes_a_temperature_and_keeps_its_classes(store, better):
    """``params={"temperature": T}``: the probabilities of softmax(logits / T), the same classes; the registered
    version's tag ``temperature`` (evaluate sets it) is what ``fmnist-predict --calibrated`` applies."""
    from softmax_regression.evaluation import with_temperature
    from softmax_regression.models.file import ModelFileError
    from softmax_regression.tracking.registry import calibrated_version

    features = example_features(n=40, seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = mlflow.pyfunc.load_model(f"models:/{REGISTERED}@{CHAMPION_ALIAS}")
    plain, warm = model.predict(features), model.predict(features, params={"temperature": 2.5})
    np.testing.assert_array_equal(plain["class"].to_numpy(), warm["class"].to_numpy())
    path = store.root / "champion-t.pt"
    path.write_bytes(better.data)
    probabilities = load_model(path).proba_of_scaled(torch.from_numpy(features)).numpy()
    np.testing.assert_allclose(warm["probability"].to_numpy(), with_temperature(probabilities, 2.5).max(axis=1),
                               rtol=1e-5)
    assert (warm["probability"] < plain["probability"]).all()  # T > 1 softens every answer

    uri, version = f"models:/{REGISTERED}@{CHAMPION_ALIAS}", better.after.alias
    # recorded when it was registered; the alias read once: the weights are loaded from the version it named
    assert calibrated_version(uri, store.root) == (f"models:/{REGISTERED}/{version}", TEMPERATURE)
    store.client.delete_model_version_tag(REGISTERED, version, TEMPERATURE_TAG)
    try:
        with pytest.raises(ModelFileError, match="carries no temperature"):
            calibrated_version(uri, store.root)
        for tagged in ("-1", "0", "nan", "inf", "abc"):  # a hand-edited tag: reversed or NaN probabilities
            store.client.set_model_version_tag(REGISTERED, version, TEMPERATURE_TAG, tagged)
            with pytest.raises(ModelFileError) as info:
                calibrated_version(uri, store.root)
            assert str(info.value) == (
                f"{uri}: version {version} of {REGISTERED} carries the temperature {tagged!r} (tag 'temperature'), "
                "not a number from 0.01 to 100.0: run the project's evaluate stage again, or give --temperature "
                "instead of --calibrated")
    finally:
        store.client.set_model_version_tag(REGISTERED, version, TEMPERATURE_TAG, repr(TEMPERATURE))


WITHOUT_THE_PROJECT = r"""
import importlib.util, json, os, sys, warnings
# every folder that holds the package: the editable install's src/, or a clone's on PYTHONPATH
sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "softmax_regression"))]
assert importlib.util.find_spec("softmax_regression") is None, "the project must not be importable here"
import mlflow, numpy as np
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = mlflow.pyfunc.load_model(sys.argv[2])
predicted = model.predict(np.load(sys.argv[3]))
import softmax_regression
print(json.dumps({"classes": predicted["class"].tolist(), "code": softmax_regression.__file__,
                  "requirements": open(mlflow.pyfunc.get_model_dependencies(sys.argv[2])).read().split()}))
"""


def test_the_champion_loads_and_predicts_where_the_project_is_not_installed(store, better, tmp_path):
    """`mlflow models serve -m models:/...@champion` on another machine: the classifier carries the project's
    code and requires only packages an index has (this project is on none)."""
    features = example_features(n=5, seed=7)
    np.save(tmp_path / "features.npy", features)
    uri = f"models:/{REGISTERED}@{CHAMPION_ALIAS}"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_PROJECT, str(PROJECT_ROOT / "src"), uri, str(tmp_path / "features.npy")],
        cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=store.uri), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert f"{Path('code') / 'softmax_regression' / '__init__.py'}" in answer["code"]
    assert not answer["code"].startswith(str(PROJECT_ROOT))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        here = mlflow.pyfunc.load_model(uri).predict(features)
    assert answer["classes"] == here["class"].tolist()
    assert not any(r.startswith("softmax-regression") for r in answer["requirements"]), answer["requirements"]
    assert {r.split("==")[0] for r in answer["requirements"]} >= {"torch", "numpy", "mlflow"}


# --- two processes at once -----------------------------------------------------------------------------------------


CHILD = r"""
import json, sys, time
from pathlib import Path

import numpy as np

from softmax_regression.tracking import registry
from softmax_regression.tracking import store as mlflow_store
from softmax_regression.tracking.model_runs import ModelRun

name, key, run_id, accuracy = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
data = Path(f"{key}.pt").read_bytes()
features = np.load("features.npy")


def wait_for(*paths):
    deadline = time.monotonic() + 120
    while not all(Path(p).exists() for p in paths):
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {paths}")
        time.sleep(0.002)


classifier_uri = registry._classifier_uri


def find_then_meet(*args, **kwargs):
    # The race is in what follows finding the run's classifier (register, compare, move the alias), so both
    # processes meet here and go on together.
    uri = classifier_uri(*args, **kwargs)
    Path(f"{key}.found").touch()
    wait_for("low.found", "high.found")
    return uri


registry._classifier_uri = find_then_meet
mlflow_store.configure(".")
Path(f"{key}.ready").touch()
wait_for("go")
decision = registry.register_and_promote(ModelRun("scratch", data, run_id, None), features, name, accuracy, 1.0)
print(json.dumps({"version": decision.version, "promoted": decision.promoted,
                  "champion_version": decision.champion_version}))
"""


def test_parallel_registrations_promote_the_better_one(store_root):
    """Two evaluate processes register at once. Their runs hold their classifiers, as the train stages leave
    them: logging a pyfunc is seconds of each process's own, before the race."""
    name = "fashion-mnist-race"
    accuracies = {"low": 0.70, "high": 0.90}
    files = {"low": checkpoint(11), "high": checkpoint(12)}
    np.save(store_root / "features.npy", example_features())
    with tracking_store(store_root) as uri:  # the store and the runs exist (as after the train stages), no registry
        experiment = mlflow_store.experiment_id(EXPERIMENT, store_root)
        store = Store(store_root, uri, experiment, mlflow.MlflowClient())
        run_ids = {key: new_run(store, key, data, classifier=True) for key, data in files.items()}
    for key, data in files.items():
        (store_root / f"{key}.pt").write_bytes(data)

    env = clean_env(PYTHONPATH=str(PROJECT_ROOT / "src"))
    processes = {
        key: subprocess.Popen(
            [sys.executable, "-c", CHILD, name, key, run_ids[key], repr(accuracies[key])],
            cwd=store_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for key in files
    }
    try:
        deadline = time.monotonic() + 120
        while not all((store_root / f"{key}.ready").exists() for key in files):
            assert all(p.poll() is None for p in processes.values()), "a process ended before the start"
            assert time.monotonic() < deadline, "the processes did not get ready"
            time.sleep(0.01)
        (store_root / "go").touch()  # both start registering now
        outputs = {key: p.communicate(timeout=180) for key, p in processes.items()}
    finally:
        for p in processes.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for key, p in processes.items():
        assert p.returncode == 0, f"{key} exited {p.returncode}\n{outputs[key][1][-4000:]}"
    decisions = {key: json.loads(outputs[key][0].strip().splitlines()[-1]) for key in files}

    with tracking_store(store_root):
        client = mlflow.MlflowClient()
        versions = {str(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
        champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        champions = champion_run_ids(client, experiment)
    assert len(versions) == 2, "one version per model file"
    assert {v.tags[runs.MODEL_SHA256_TAG] for v in versions.values()} == {sha256_hex(d) for d in files.values()}
    assert {decisions[key]["version"] for key in files} == set(versions)
    assert decisions["high"]["promoted"] is True
    assert str(champion.version) == decisions["high"]["version"], decisions
    assert float(champion.tags[VAL_ACCURACY_TAG]) == accuracies["high"]
    assert champion.run_id == run_ids["high"]
    assert champions == {run_ids["high"]}, "only the champion's run carries champion=true"
    if decisions["low"]["promoted"]:  # low registered first, on the empty registry: version 1, beaten after
        assert decisions["low"]["version"] == "1" and decisions["high"]["version"] == "2"
    else:  # high was first: low saw it as champion
        assert decisions["low"]["champion_version"] == decisions["high"]["version"] == "1"


def test_writes_another_evaluate_makes_first_do_not_fail_the_registration(store_root):
    """On a server nothing serialises two evaluates. Another one inserts ``@champion`` (at its own version) and
    this version's temperature tag between MLflow's read and its insert: MLflow's insert then fails on the
    row's key (on a server, PostgreSQL's "duplicate key value"); the registration writes again and
    the champion settles on the best version, with this evaluate's temperature."""
    name = "fashion-mnist-raced"
    files = {"other": checkpoint(31), "ours": checkpoint(32)}
    with tracking_store(store_root) as uri:
        store = Store(store_root, uri, mlflow_store.experiment_id(EXPERIMENT, store_root), mlflow.MlflowClient())
        run_ids = {key: new_run(store, key, data) for key, data in files.items()}
        assert promote(name, files["other"], run_ids["other"], 0.70).version == "1"
        store.client.delete_registered_model_alias(name, CHAMPION_ALIAS)  # the other has yet to set it
        database = mlflow_store.sqlite_path(uri)
        their_alias = {"name": name, "alias": CHAMPION_ALIAS, "version": 1}
        their_temperature = {"name": name, "version": 2, "key": TEMPERATURE_TAG, "value": "9.0"}
        with inserted_first(database, "registered_model_aliases", their_alias), \
                inserted_first(database, "model_version_tags", their_temperature, TEMPERATURE_TAG):
            decision = promote(name, files["ours"], run_ids["ours"], 0.80)
        assert decision == ChampionDecision(version="2", promoted=True, champion_version="2",
                                            champion_val_accuracy=0.80)
        champion = store.client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        assert (str(champion.version), champion.tags[TEMPERATURE_TAG]) == ("2", repr(TEMPERATURE))
        assert champion_run_ids(store.client, store.experiment_id) == {run_ids["ours"]}


def test_the_classifier_a_train_run_logged_is_registered_as_it_is(store):
    """The train stages log each model file's classifier; registering it logs no second one."""
    data = checkpoint(99)
    path = store.root / "trained.pt"
    path.write_bytes(data)
    with mlflow.start_run(experiment_id=store.experiment_id, run_name="trained",
                          tags={runs.MODEL_SHA256_TAG: sha256_hex(data)}) as run:
        log_model_file("scratch", data, example_features())
    logged = {m.name: m for m in store.client.search_logged_models(
        [store.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")}
    assert set(logged) == {"model", "classifier"}
    assert run_classifier(store.client, run.info.run_id, sha256_hex(data)).model_id == logged["classifier"].model_id
    assert run_classifier(store.client, run.info.run_id, "0" * 64) is None, "another file's classifier is not this one"
    promote("fashion-mnist-trained", data, run.info.run_id, 0.5)
    version = store.client.get_model_version_by_alias("fashion-mnist-trained", CHAMPION_ALIAS)
    assert version.source == logged["classifier"].model_uri
    # evaluate hands over the classifier it found already: the same version source, nothing logged either
    promote("fashion-mnist-handed", data, run.info.run_id, 0.5, classifier=logged["classifier"])
    handed = store.client.get_model_version_by_alias("fashion-mnist-handed", CHAMPION_ALIAS)
    assert handed.source == logged["classifier"].model_uri
    assert len(store.client.search_logged_models(
        [store.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")) == 2


def test_deleting_the_champions_run_hands_the_title_on_and_registering_goes_on(store_root):
    """A run deleted in the MLflow UI (a routine clean-up): its version leaves the race, the next evaluate's
    registration works (MLflow refuses tags on a deleted run) and the best version left takes @champion; the
    same model file logged again into a new run registers anew and competes."""
    name = "fashion-mnist-deleted"
    files = {"a": checkpoint(21), "b": checkpoint(22), "c": checkpoint(23)}
    with tracking_store(store_root) as uri:
        store = Store(store_root, uri, mlflow_store.experiment_id(EXPERIMENT, store_root), mlflow.MlflowClient())
        client = store.client
        runs = {key: new_run(store, key, data) for key, data in files.items()}
        assert promote(name, files["a"], runs["a"], 0.80).champion_version == "1"
        assert promote(name, files["b"], runs["b"], 0.70).promoted is False

        client.delete_run(runs["a"])  # the champion's run
        decision = promote(name, files["c"], runs["c"], 0.60)
        assert decision == ChampionDecision(version="3", promoted=False, champion_version="2",
                                            champion_val_accuracy=0.70)
        assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == "2"
        assert champion_run_ids(client, store.experiment_id) == {runs["b"]}

        again = new_run(store, "a-again", files["a"])  # evaluate creates a run for a file whose run is gone
        decision = promote(name, files["a"], again, 0.80)
        assert decision == ChampionDecision(version="4", promoted=True, champion_version="4",
                                            champion_val_accuracy=0.80)
        assert champion_run_ids(client, store.experiment_id) == {again}


def test_a_champion_whose_files_are_lost_hands_on_the_title_and_its_file_registers_again(store_root, caplog):
    """The artifact store lost the champion's files (``mlruns/`` removed, a bucket that lost objects) while
    the database still points at them: the version leaves the race, the same model file registers again
    from a run that has it, the alias in the store moves there (loading ``@champion`` gives that file's
    weights), and one line says what was missing and what was done; loading the lost version names it, its
    files and the way back."""
    import logging
    import shutil

    from softmax_regression.models.file import ModelFileError
    from softmax_regression.tracking.model_runs import FILES_MISSING_TAG
    from softmax_regression.tracking.registry import load_model_uri, version_location

    name = "fashion-mnist-lost"
    files = {"a": checkpoint(31), "b": checkpoint(32)}
    with tracking_store(store_root) as uri:
        store = Store(store_root, uri, mlflow_store.experiment_id(EXPERIMENT, store_root), mlflow.MlflowClient())
        client = store.client
        runs = {key: new_run(store, key, data) for key, data in files.items()}
        assert promote(name, files["a"], runs["a"], 0.80).champion_version == "1"
        assert promote(name, files["b"], runs["b"], 0.70).promoted is False
        location = version_location(client, name, "1")
        shutil.rmtree(location.removeprefix("file://"))

        with pytest.raises(ModelFileError) as lost:
            load_model_uri(f"models:/{name}@{CHAMPION_ALIAS}", store_root)
        message = str(lost.value)
        assert "\n" not in message
        assert f"version 1 of {name} lost its files (MLmodel, python_model.pkl, artifacts/model.pt missing from " \
               f"{location})" in message and "run the project's evaluate stage again (forced" in message

        again = new_run(store, "a-again", files["a"])  # what evaluate does for a run whose files are gone
        with caplog.at_level(logging.WARNING, logger="softmax_regression.tracking.registry"):
            decision = promote(name, files["a"], again, 0.80)
        assert decision == ChampionDecision(version="3", promoted=True, champion_version="3",
                                            champion_val_accuracy=0.80)
        said = [r.getMessage() for r in caplog.records if r.name == "softmax_regression.tracking.registry"]
        assert said == [f"{name} version 1 lost its files (MLmodel, python_model.pkl, artifacts/model.pt missing "
                        f"from {location}); registered its model file again as version 3 and moved @champion to "
                        "version 3"]
        assert client.get_model_version(name, "1").tags[FILES_MISSING_TAG] == \
            "MLmodel, python_model.pkl, artifacts/model.pt"
        assert champion_run_ids(client, store.experiment_id) == {again}
        assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == "3"
        # the weights model file "a" was made of (checkpoint(31)), not those of "b", the runner-up
        registered_again = initial_weights(SIDE * SIDE, 10, 0.01, torch.Generator().manual_seed(31))
        assert torch.equal(load_model_uri(f"models:/{name}@{CHAMPION_ALIAS}", store_root).W, registered_again)

        caplog.clear()  # said once: the next registration is quiet about it
        with caplog.at_level(logging.WARNING, logger="softmax_regression.tracking.registry"):
            assert promote(name, files["b"], runs["b"], 0.70).champion_version == "3"
        assert not [r for r in caplog.records if r.name == "softmax_regression.tracking.registry"]
