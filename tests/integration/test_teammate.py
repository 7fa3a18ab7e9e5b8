"""A teammate's MLflow store is not the one that trained the models: the pipeline works against any store.

The outs are made against one store; then the store is thrown away (or the
outs are pulled from a DVC remote into a fresh clone that logs to a fresh
`mlflow server`), an `evaluate.*` and a `report.*` param change, and `dvc repro`
reruns evaluate and report. They find no run of the models in the new store,
create them from the model files, and log the test metrics, the report and
the champion there.
"""

import hashlib
import shutil
from pathlib import Path

import mlflow
import pytest

from support import clean_env, clone_project, get_json, mlflow_server, run, set_param, stages_ran

EXPERIMENT = REGISTERED = "fashion-mnist-softmax"
KINDS = ("scratch", "concise")
DOWNSTREAM = ["evaluate", "report"]


@pytest.fixture(scope="module")
def origin(fault_project):
    """A project where the pipeline ran against its own store (the session's fault_project)."""
    project, _ = fault_project
    assert (project / "mlflow.db").is_file()
    return project


def change_downstream_params(project: Path) -> None:
    set_param(project, "evaluate.baseline", False)
    set_param(project, "report.n_images", 9)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_store_holds_the_evaluation(uri: str, project: Path) -> None:
    """The models' runs (found by the files' SHA-256), their test metrics and report, and the champion."""
    import json

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    metrics = json.loads((project / "reports/eval/metrics.json").read_text())
    assert set(metrics) == set(KINDS)  # evaluate.baseline is off
    runs = {}
    for kind in KINDS:
        (r,) = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.model_sha256 = '{sha256(project / f'models/{kind}.pt')}'")
        assert r.info.run_name == kind and r.info.status == "FINISHED"
        assert r.data.tags["created_from"] == "model file"  # this store never saw the training
        assert r.data.params["train.epochs"] == "2" and r.data.params["train.lr"] == "0.1"
        assert r.data.metrics["test_accuracy"] == pytest.approx(metrics[kind]["test_accuracy"], abs=1e-9)
        assert r.data.metrics["val_accuracy"] == pytest.approx(metrics[kind]["val_accuracy"], abs=1e-9)
        assert {a.path for a in client.list_artifacts(r.info.run_id, "report")} == {
            "report/report.html", "report/summary.md"}
        assert f"checkpoint/{kind}.pt" in {a.path for a in client.list_artifacts(r.info.run_id, "checkpoint")}
        runs[kind] = r
    version = client.get_model_version_by_alias(REGISTERED, "champion")
    best = max(KINDS, key=lambda kind: (metrics[kind]["val_accuracy"], -KINDS.index(kind)))
    assert version.run_id == runs[best].info.run_id
    assert float(version.tags["val_accuracy"]) == pytest.approx(metrics[best]["val_accuracy"], abs=1e-9)
    tagged = client.search_runs([experiment.experiment_id], filter_string="tags.champion = 'true'")
    assert [r.info.run_id for r in tagged] == [version.run_id]


def test_own_store_thrown_away_then_a_param_change_reruns_into_a_new_store(origin):
    project = origin
    shutil.rmtree(project / "mlruns")
    (project / "mlflow.db").unlink()
    # Other tests of the shared project may have run evaluate with these params: DVC would restore its
    # outs from the run cache instead of running it (and a stage that does not run logs nothing).
    shutil.rmtree(project / ".dvc" / "cache" / "runs", ignore_errors=True)
    change_downstream_params(project)
    try:
        result = run(["dvc", "repro"], project)
        assert stages_ran(result.stdout) == DOWNSTREAM
        assert (project / "mlflow.db").is_file()
        # MLflow keeps one SQLAlchemy engine per URI for the life of a process: this process may hold
        # one on the deleted database (an earlier test read it), so it reads the new one by another name.
        assert_store_holds_the_evaluation(f"sqlite:///{project}/./mlflow.db", project)
    finally:
        run(["git", "checkout", "--", "params.yaml", "dvc.lock"], project)
        run(["dvc", "checkout", "--force"], project)


def test_fresh_clone_after_dvc_pull_logs_into_a_fresh_team_server(origin, tmp_path):
    remote = tmp_path / "dvc-remote"  # the team's DVC remote (configured locally, so origin's git stays clean)
    run(["dvc", "remote", "add", "--local", "shared", str(remote)], origin)
    try:
        run(["dvc", "push", "-r", "shared"], origin)
    finally:
        run(["dvc", "remote", "remove", "--local", "shared"], origin)
    clone = clone_project(tmp_path / "teammate", origin)
    run(["dvc", "remote", "add", "--local", "shared", str(remote)], clone)
    run(["dvc", "pull", "-r", "shared"], clone)
    assert "Data and pipelines are up to date." in run(["dvc", "status"], clone).stdout
    change_downstream_params(clone)
    with mlflow_server(tmp_path / "server") as uri:
        result = run(["dvc", "repro"], clone, env=clean_env(MLFLOW_TRACKING_URI=uri))
        assert stages_ran(result.stdout) == DOWNSTREAM
        assert not (clone / "mlflow.db").exists()
        assert_store_holds_the_evaluation(uri, clone)
        experiment = get_json(f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}")
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in \
            experiment["experiment"]["tags"]
    # the teammate's rerun: new params and their dvc.lock to commit, nothing else
    assert run(["git", "status", "--porcelain"], clone).stdout.splitlines() == [" M dvc.lock", " M params.yaml"]
