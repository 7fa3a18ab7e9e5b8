"""MLflow tracking of real pipeline runs in the default local store, and a server that is not there. (The pipeline
against a real server: the team stack's, tests/integration/test_team_stack.py, and a plain `mlflow server`,
tests/integration/test_teammate.py.)"""

import hashlib
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest

from support import PROJECT_ROOT, VENV_BIN, clean_env, free_port, run

EXPERIMENT = "fashion-mnist-softmax"
REGISTERED = "fashion-mnist-softmax"
SCORED = ("scratch", "concise", "baseline")


def client_for(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs_by_name(client: mlflow.MlflowClient, pipeline_id: str | None = None) -> dict[str, list]:
    """Runs of the experiment by run name; only one pipeline execution's when ``pipeline_id`` is given."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"experiment {EXPERIMENT} missing"
    query = f"tags.pipeline_id = '{pipeline_id}'" if pipeline_id else ""
    runs = client.search_runs([experiment.experiment_id], filter_string=query)
    grouped: dict[str, list] = {}
    for r in runs:
        grouped.setdefault(r.info.run_name, []).append(r)
    return grouped


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_runs(client: mlflow.MlflowClient, project: Path) -> dict[str, object]:
    """The run of each scored model file of ``project``, found as the stages find it: by its SHA-256."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"experiment {EXPERIMENT} missing"
    found = {}
    for kind in SCORED:
        runs = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.model_sha256 = '{sha256(project / 'models' / f'{kind}.pt')}'")
        assert len(runs) == 1, (kind, [r.info.run_id for r in runs])
        found[kind] = runs[0]
    return found


def assert_pipeline_tracked(client: mlflow.MlflowClient, project: Path) -> None:
    """What one pipeline execution must leave in MLflow, whatever the store.

    The shared pipeline project also serves tests that rerun stages with other
    params; the runs of the execution whose outs are in the workspace are the
    ones with its pipeline_id.
    """
    runs = model_runs(client, project)
    pipeline_id = runs["scratch"].data.tags["pipeline_id"]
    grouped = runs_by_name(client, pipeline_id)
    assert {name: len(found) for name, found in grouped.items()} == {"data": 1, "scratch": 1, "concise": 1,
                                                                      "baseline": 1}
    assert {kind: r.info.run_id for kind, r in runs.items()} == {kind: grouped[kind][0].info.run_id for kind in SCORED}
    metrics = json.loads((project / "reports/eval/metrics.json").read_text())
    dataset = {r.data.tags["dataset_sha256"] for found in grouped.values() for r in found}
    assert len(dataset) == 1 and len(next(iter(dataset))) == 64
    for kind, r in runs.items():
        tags = r.data.tags
        assert tags["implementation"] == kind
        # the run's source is the stage's file, not the launcher `python -m pipeline STAGE` starts from
        assert Path(tags["mlflow.source.name"]).name == f"train_{kind}.py"
        assert len(tags["git_commit"]) == 40 and tags["git_dirty"] in ("true", "false")
        assert r.info.status == "FINISHED"
        # evaluate logged into it later; the run kept the end time of the stage that made it
        assert r.info.end_time <= client.get_metric_history(r.info.run_id, "test_accuracy")[-1].timestamp
        assert r.data.metrics["test_accuracy"] == pytest.approx(metrics[kind]["test_accuracy"], abs=1e-9)
        assert r.data.metrics["test_loss"] == pytest.approx(metrics[kind]["test_loss"], abs=1e-9)
        assert r.data.metrics["val_accuracy"] == pytest.approx(metrics[kind]["val_accuracy"], abs=1e-9)
        assert 0.5 < r.data.metrics["test_f1_shirt"] < r.data.metrics["test_f1_trouser"] <= 1
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"figures", "checkpoint", "per_class.csv", "confusion_matrix.json", "report"} <= artifacts
        # the confusion table once (evaluate may have logged into this run before), where the UI finds tables
        with tempfile.TemporaryDirectory() as tmp:
            table = json.loads(Path(client.download_artifacts(r.info.run_id, "confusion_matrix.json", tmp)).read_text())
        assert len(table["data"]) == 10 and sum(sum(row[1:]) for row in table["data"]) == 10000
        assert {"path": "confusion_matrix.json", "type": "table"} in json.loads(tags["mlflow.loggedArtifacts"])
        assert {a.path for a in client.list_artifacts(r.info.run_id, "report")} == {
            "report/report.html", "report/summary.md"}
        logged = client.search_logged_models([r.info.experiment_id], filter_string=f"source_run_id = '{r.info.run_id}'")
        assert {"model", "classifier"} <= {m.name for m in logged}, "the PyTorch model and the classifier"
        classifier = next(m for m in logged if m.name == "classifier")
        assert classifier.tags["model_sha256"] == sha256(project / "models" / f"{kind}.pt")
        linked = {m.key: m.value for m in classifier.metrics}
        assert linked["test_accuracy"] == pytest.approx(metrics[kind]["test_accuracy"], abs=1e-9)
    for kind in ("scratch", "concise"):
        r = runs[kind]
        assert r.data.params["train.lr"] == "0.1" and r.data.params["train.batch_size"] == "256"
        history = client.get_metric_history(r.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, 11))
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")] == list(range(1, 11))
        assert history[-1].value == pytest.approx(metrics[kind]["val_accuracy"], abs=1e-6)
        assert "history.csv" in {a.path for a in client.list_artifacts(r.info.run_id)}
        figures = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
        assert figures == {"figures/training_curves.png", "figures/confusion_matrix.png", "figures/reliability.png"}
    assert runs["baseline"].data.params["baseline.C"] == "1.0"

    # the champion: the best validation accuracy, and the only run tagged champion
    version = client.get_model_version_by_alias(REGISTERED, "champion")
    best = max(SCORED, key=lambda kind: metrics[kind]["val_accuracy"])
    assert version.run_id == runs[best].info.run_id
    # the classifier the train stage logged, registered as it is: evaluate logged no model of its own
    assert [m.model_uri for m in client.search_logged_models(
        [runs[best].info.experiment_id], filter_string=f"source_run_id = '{version.run_id}' AND name = 'classifier'")
    ] == [version.source]
    assert float(version.tags["val_accuracy"]) == pytest.approx(metrics[best]["val_accuracy"], abs=1e-9)
    assert version.tags["model_sha256"] == sha256(project / "models" / f"{best}.pt")
    tagged = client.search_runs([runs[best].info.experiment_id], filter_string="tags.champion = 'true'")
    assert [r.info.run_id for r in tagged] == [version.run_id]


def assert_champion_predicts_classes(uri: str, project: Path) -> None:
    images = np.load(project / "data/processed/test_images.npy")[:200]
    labels = np.load(project / "data/processed/test_labels.npy")[:200]
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        # models:/ resolves through MLflow's global URIs, which set_*_uri also export to the environment:
        # all of them are put back afterwards, so no later test in this process talks to this store.
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(variable, raising=False)
        mp.setattr(tracking_utils, "_tracking_uri", None)
        mp.setattr(registry_utils, "_registry_uri", None)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        warnings.simplefilter("ignore")
        model = mlflow.pyfunc.load_model(f"models:/{REGISTERED}@champion")
    predictions = model.predict(images.astype(np.float32) / 255)
    assert list(predictions.columns) == ["class", "label", "probability"]
    assert predictions["class"].between(0, 9).all()
    assert (predictions["class"].to_numpy() == labels).mean() > 0.8
    assert ((predictions["probability"] > 0.1) & (predictions["probability"] <= 1)).all()


# --- the default local store -------------------------------------------------------------------

def local_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def test_local_store_holds_every_run_with_its_metrics_and_artifacts(pipeline_project):
    project, _ = pipeline_project
    assert (project / "mlflow.db").is_file() and (project / "mlruns").is_dir()
    assert_pipeline_tracked(client_for(local_uri(project)), project)


def test_local_champion_predicts_classes(pipeline_project):
    project, _ = pipeline_project
    assert_champion_predicts_classes(local_uri(project), project)


def test_predict_command_takes_the_champion_uri(pipeline_project):
    project, _ = pipeline_project
    result = run([str(VENV_BIN / "fmnist-predict"), f"models:/{REGISTERED}@champion",
                  "data/raw/t10k-images-idx3-ubyte", "--json"], project)
    answers = json.loads(result.stdout)
    labels = np.load(project / "data/processed/test_labels.npy")
    names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
    top1 = [a["top"][0]["class"] for a in answers]
    assert len(answers) == 10_000
    assert np.mean([t == names[y] for t, y in zip(top1, labels)]) > 0.8


def champion_model_file(client: mlflow.MlflowClient, project: Path) -> tuple[object, str]:
    """The ``@champion`` version and which of the workspace's model files it is (by the version's SHA-256 tag)."""
    version = client.get_model_version_by_alias(REGISTERED, "champion")
    kinds = [kind for kind in SCORED if sha256(project / "models" / f"{kind}.pt") == version.tags["model_sha256"]]
    assert len(kinds) == 1, (version.version, version.tags)
    return version, kinds[0]


def predicted(project: Path, class_names: list[str], *options: str) -> tuple[list[list[str]], np.ndarray]:
    """`fmnist-predict --json` of the champion on the raw test images, every class listed: per image, the
    classes from most to least probable, and the probabilities in ``class_names`` order."""
    result = run([str(VENV_BIN / "fmnist-predict"), "--json", "--top", str(len(class_names)), *options,
                  f"models:/{REGISTERED}@champion", "data/raw/t10k-images-idx3-ubyte"], project)
    answers = json.loads(result.stdout)
    ranking = [[entry["class"] for entry in answer["top"]] for answer in answers]
    by_class = [{entry["class"]: entry["probability"] for entry in answer["top"]} for answer in answers]
    return ranking, np.array([[probabilities[name] for name in class_names] for probabilities in by_class])


def test_the_champion_carries_its_temperature_and_predicts_calibrated(pipeline_project):
    """evaluate tags the champion's version with the temperature it fitted (metrics.json's, for that model),
    and `fmnist-predict --calibrated` applies it: softmax(logits / T), computed here with numpy from the
    champion's model file, every class ranked as without it."""
    import torch

    from softmax_regression.models.file import load_model
    from softmax_regression.predicting.inputs import load_inputs

    project, _ = pipeline_project
    version, kind = champion_model_file(client_for(local_uri(project)), project)
    metrics = json.loads((project / "reports/eval/metrics.json").read_text())
    temperature = float(version.tags["temperature"])
    assert round(temperature, 6) == metrics[kind]["temperature"]  # metrics.json keeps 6 decimals

    model = load_model(project / "models" / f"{kind}.pt")
    pixels = np.stack([image.pixels for image in load_inputs(project / "data/raw/t10k-images-idx3-ubyte", model.side)])
    with torch.no_grad():
        uncalibrated = model.predict_proba(torch.from_numpy(pixels)).double().numpy()
    # the model's logits up to a constant per row (which softmax ignores) are log p: divided by T, softmax again
    scaled = np.log(np.clip(uncalibrated, 1e-300, None)) / temperature
    expected = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)

    plain_ranking, plain = predicted(project, model.class_names)
    ranking, calibrated = predicted(project, model.class_names, "--calibrated")
    assert np.abs(plain - uncalibrated).max() < 2e-6  # the champion is that model file (JSON: 6 decimals)
    assert np.abs(calibrated - expected).max() < 2e-6
    assert np.abs(calibrated - plain).max() > 1e-3  # the temperature did change the probabilities
    assert ranking == plain_ranking  # and no class's rank in any image


def test_a_repro_that_changes_nothing_logs_nothing(pipeline_project):
    project, _ = pipeline_project
    client = client_for(local_uri(project))
    before = {name: len(runs) for name, runs in runs_by_name(client).items()}
    versions = len(client.search_model_versions(f"name='{REGISTERED}'"))
    result = run(["dvc", "repro"], project)
    assert "Running stage" not in result.stdout
    assert {name: len(runs) for name, runs in runs_by_name(client).items()} == before
    assert len(client.search_model_versions(f"name='{REGISTERED}'")) == versions


def test_default_store_follows_dvc_root(tmp_path, monkeypatch):
    from pipeline.stage_runs import dvc_tags, project_root
    from softmax_regression.tracking.store import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "original"))
    monkeypatch.setenv("DVC_EXP_NAME", "lucid-fern")
    monkeypatch.setenv("DVC_STAGE", "train_scratch")
    assert project_root() == tmp_path / "original"
    assert tracking_uri(project_root()) == f"sqlite:///{tmp_path / 'original' / 'mlflow.db'}"
    assert dvc_tags() == {"dvc_exp_name": "lucid-fern", "dvc_stage": "train_scratch"}
    for variable in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_STAGE"):
        monkeypatch.delenv(variable)
    assert project_root() == tmp_path and dvc_tags() == {}
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team-server:5000")
    assert tracking_uri(tmp_path) == "http://team-server:5000"


@pytest.mark.parametrize("given, expected", [
    ("sqlite:///mlflow.db", "sqlite:///{root}/mlflow.db"),  # relative: the project's root, not the cwd
    ("sqlite:///stores/team.db?timeout=30", "sqlite:///{root}/stores/team.db?timeout=30"),
    ("sqlite:////srv/mlflow/mlflow.db", "sqlite:////srv/mlflow/mlflow.db"),  # absolute: as given
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("mlruns", "{root}/mlruns"),
    ("/srv/mlruns", "/srv/mlruns"),
    ("file:///srv/mlruns", "file:///srv/mlruns"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("postgresql://user@db.example/mlflow", "postgresql://user@db.example/mlflow"),
    ("databricks", "databricks"),
])
def test_a_relative_store_in_the_environment_is_the_projects_not_the_working_directorys(
        tmp_path, monkeypatch, given, expected):
    """A queued `dvc exp run` runs each stage in a temporary copy of the project: a relative
    MLFLOW_TRACKING_URI resolved there would log every run into a store deleted with the copy."""
    from softmax_regression.tracking.store import serves_artifacts, tracking_uri

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", given)
    root = tmp_path / "project"
    assert tracking_uri(root) == expected.format(root=root)
    # only a server decides where artifacts go; every other store gets the project's mlruns/ explicitly
    assert serves_artifacts(given) == given.startswith(("http", "databricks"))


def test_the_library_knows_nothing_of_dvc():
    """src/ takes the root and the tags from its caller; only pipeline/ reads DVC's environment."""
    library = PROJECT_ROOT / "src" / "softmax_regression"
    offenders = [f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}"
                 for path in sorted(library.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if "dvc" in line.lower()]
    assert offenders == []


# --- the server is down ------------------------------------------------------------------------

@pytest.mark.parametrize("stage", [["preprocess"], ["train_scratch", "--no-progress"], ["evaluate"],
                                   ["report"]])
def test_unreachable_server_fails_fast_naming_the_uri_and_writes_nothing(pipeline_project, stage):
    project, _ = pipeline_project
    closed = f"http://127.0.0.1:{free_port()}"
    watched = sorted(p for d in ("models", "reports") for p in (project / d).rglob("*") if p.is_file())
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in watched}
    start = time.monotonic()
    result = run([sys.executable, "-m", "pipeline", *stage], project, check=False,
                 env=clean_env(MLFLOW_TRACKING_URI=closed))
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert elapsed < 30
    last_line = result.stderr.strip().splitlines()[-1]
    assert closed in last_line and "unreachable" in last_line
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(p for d in ("models", "reports") for p in (project / d).rglob("*") if p.is_file())}
    assert after == before, "no DVC out may change when tracking is down"
