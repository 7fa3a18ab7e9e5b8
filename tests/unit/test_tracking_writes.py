"""What the stages write into an MLflow run through ``softmax_regression.tracking.store``, on a real SQLite store."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from softmax_regression.tracking import runs, store
from support import before_each_statement, inserted_first, tracking_store


@pytest.fixture(scope="module")
def experiment_id(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("tracking-writes")
    with tracking_store(root):
        yield store.experiment_id("tracking-writes", root)


def test_a_table_logged_again_replaces_the_one_before(experiment_id):
    """evaluate logs the confusion table into a run that may hold one already (a rerun on the same model
    files): the table is replaced, not appended to as ``mlflow.log_table`` would, and MLflow reads it."""
    client = mlflow.MlflowClient()
    with runs.tracked_run(experiment_id=experiment_id, run_name="tables") as run:
        pass
    first = pd.DataFrame({"true": ["a", "b"], "a": [5, 1], "b": [0, 4]})
    second = pd.DataFrame({"true": ["a", "b"], "a": [4, 2], "b": [1, 3]})
    for table in (first, second):
        runs.log_table(table, "confusion_matrix.json", run.info.run_id)
    read = client.load_table(experiment_id, "confusion_matrix.json", run_ids=[run.info.run_id])
    pd.testing.assert_frame_equal(read.reset_index(drop=True), second)
    logged = json.loads(client.get_run(run.info.run_id).data.tags["mlflow.loggedArtifacts"])
    assert logged == [{"path": "confusion_matrix.json", "type": "table"}]
    with pytest.raises(ValueError, match="expected a .json file"):
        runs.log_table(second, "confusion_matrix.csv", run.info.run_id)


def test_metrics_of_many_steps_land_in_one_batch_as_a_history(experiment_id):
    """The train stages log every epoch's metrics at once; more than MLflow takes in one batch (1000) too."""
    client = mlflow.MlflowClient()
    epochs = 400
    with runs.tracked_run(experiment_id=experiment_id, run_name="history") as run:
        runs.log_metric_steps((epoch, {"train_loss": 1 / epoch, "val_acc": 0.5 + epoch / 1000, "lr": 0.1})
                                  for epoch in range(1, epochs + 1))
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(e, 1 / e) for e in range(1, epochs + 1)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == list(range(1, epochs + 1))
    assert client.get_run(run.info.run_id).data.metrics == {"train_loss": 1 / epochs, "val_acc": 0.9, "lr": 0.1}


def test_a_finished_run_resumed_to_log_more_keeps_its_status_and_its_end_time(experiment_id):
    """A classifier registered from a run that has none is logged into that run later (``tracked_run`` with
    ``run_id``): the runs table still shows the training's duration."""
    client = mlflow.MlflowClient()
    with runs.tracked_run(experiment_id=experiment_id, run_name="resumed") as run:
        pass
    before = client.get_run(run.info.run_id).info
    time.sleep(0.05)
    with runs.tracked_run(run_id=run.info.run_id):
        mlflow.log_metric("test_accuracy", 0.83)
    after = client.get_run(run.info.run_id)
    assert after.data.metrics["test_accuracy"] == 0.83
    assert (after.info.status, after.info.start_time, after.info.end_time) == (
        "FINISHED", before.start_time, before.end_time)
    # a failure while resumed leaves the status as it was too
    with pytest.raises(RuntimeError), runs.tracked_run(run_id=run.info.run_id):
        raise RuntimeError("evaluate failed")
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("interrupt, status", [(KeyboardInterrupt, "KILLED"), (ConnectionError, "FAILED")])
def test_a_run_created_for_a_block_ends_even_when_mlflow_fails_to_start_it(experiment_id, monkeypatch, interrupt,
                                                                           status):
    """A train stage creates its run (to date it from the training's start), then enters it: Ctrl-C, or a
    server that fails, while MLflow starts it left it RUNNING for ever. A resumed run keeps its status."""
    client = mlflow.MlflowClient()
    created = client.create_run(experiment_id, run_name="created")
    with runs.tracked_run(experiment_id=experiment_id, run_name="finished") as finished:
        pass

    def failing_start(**kwargs):
        raise interrupt()

    monkeypatch.setattr(mlflow, "start_run", failing_start)
    with pytest.raises(interrupt), runs.tracked_run(created=True, run_id=created.info.run_id):
        pass
    with pytest.raises(interrupt), runs.tracked_run(run_id=finished.info.run_id):
        pass
    assert client.get_run(created.info.run_id).info.status == status
    assert client.get_run(finished.info.run_id).info.status == "FINISHED"


def test_a_tag_another_process_sets_at_the_same_time_lands(experiment_id):
    """Tuning workers that end a study together each tag its run (``best_trial``); evaluates on two machines
    each tag the champion's run, and list a table in a model's run. Here another process inserts the tag
    between MLflow's read and its insert: ``client.set_tag`` fails on the tags' primary key (PostgreSQL's
    "duplicate key value violates unique constraint" on a server); through ``store.write_racing`` it lands."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    with runs.tracked_run(experiment_id=experiment_id, run_name="raced") as run:
        pass
    database = store.sqlite_path(mlflow.get_tracking_uri())

    def other(key: str) -> dict[str, str]:
        return {"key": key, "value": "other", "run_uuid": run.info.run_id}

    with inserted_first(database, "tags", other("plain")), \
            pytest.raises(MlflowException, match="UNIQUE constraint failed: tags"):
        client.set_tag(run.info.run_id, "plain", "ours")
    with inserted_first(database, "tags", other("written again")):
        store.write_racing(client.set_tag, run.info.run_id, "written again", "ours")
    tags = client.get_run(run.info.run_id).data.tags
    assert (tags["plain"], tags["written again"]) == ("other", "ours")

    table = pd.DataFrame({"true": ["a"], "a": [1]})  # two evaluates log a table into one model's run
    listed = [{"path": "raced.json", "type": "table"}]
    with inserted_first(database, "tags", {**other("mlflow.loggedArtifacts"), "value": json.dumps(listed, indent=1)}):
        runs.log_table(table, "raced.json", run.info.run_id)
    assert client.get_run(run.info.run_id).data.tags["mlflow.loggedArtifacts"] == json.dumps(listed)
    pd.testing.assert_frame_equal(client.load_table(experiment_id, "raced.json", run_ids=[run.info.run_id]), table)


def test_evaluate_logs_into_a_model_run_by_its_id_and_leaves_it_finished(experiment_id):
    """evaluate logs its metrics, figures and tables into each model's run without starting the run again: no
    write touches the run's status or end time, so another evaluate of the same model file (a sweep's baseline,
    on a second queue worker) finds the run meanwhile (``find_run`` takes FINISHED runs). The run then holds
    every metric with its value and nothing else (test scores, validation accuracy, calibration, precision /
    recall / F1 and one-vs-rest ECE per class, under the class's name; accuracy, precision, recall and F1 as
    counted here from labels and predictions), the two figures as given, the confusion table as counted here
    and the per-class table."""
    import numpy as np

    from pipeline.evaluate import log_evaluation
    from softmax_regression import CLASS_NAMES
    from softmax_regression.evaluation.calibration import calibrate
    from softmax_regression.evaluation.metrics import evaluate_probabilities
    from softmax_regression.tracking.model_runs import ModelRun

    client = mlflow.MlflowClient()
    with runs.tracked_run(experiment_id=experiment_id, run_name="evaluated",
                          tags={runs.MODEL_SHA256_TAG: "evaluated"}) as run:
        pass
    before = client.get_run(run.info.run_id).info
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 10
    probabilities = rng.dirichlet(np.ones(10), size=40)
    probabilities[np.arange(24), labels[:24]] += 1.0  # most of the first 24 right: precision apart from recall
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    evaluation = evaluate_probabilities("baseline", probabilities, labels)
    calibration = calibrate(probabilities, labels, probabilities, labels, 5)

    statements = []
    with before_each_statement(lambda statement, parameters: statements.append(statement)):
        log_evaluation(ModelRun("baseline", b"model file", run.info.run_id, None), evaluation, calibration, 0.5,
                       b"confusion png", b"reliability png")
    assert statements and not [s for s in statements if s.lstrip().upper().startswith("UPDATE RUNS ")]
    assert mlflow.active_run() is None
    after = client.get_run(run.info.run_id)
    assert (after.info.status, after.info.end_time) == ("FINISHED", before.end_time)
    counted = np.zeros((10, 10), dtype=np.int64)  # [true, predicted]
    for true, predicted in zip(labels, probabilities.argmax(axis=1)):
        counted[true, predicted] += 1
    hits = np.diag(counted)
    precision, recall = hits / counted.sum(axis=0), hits / counted.sum(axis=1)  # every class predicted here
    f1 = 2 * precision * recall / (precision + recall)
    classes = ["t_shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
    expected = {"test_accuracy": round(hits.sum() / 40, 6), "test_loss": round(evaluation.loss, 6),
                "macro_f1": round(float(f1.mean()), 6), "val_accuracy": 0.5,
                "test_ece": round(calibration.ece, 6), "test_mce": round(calibration.mce, 6),
                "test_brier": round(calibration.brier, 6), "temperature": round(calibration.temperature, 6),
                "test_ece_calibrated": round(calibration.calibrated.ece(), 6)}
    for k, name in enumerate(classes):
        expected |= {f"test_precision_{name}": round(float(precision[k]), 6),
                     f"test_recall_{name}": round(float(recall[k]), 6), f"test_f1_{name}": round(float(f1[k]), 6),
                     f"test_ece_{name}": round(float(calibration.per_class_ece[k]), 6)}
    assert after.data.metrics == expected
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "figures", "confusion_matrix.json", "per_class.csv"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {
        "figures/confusion_matrix.png", "figures/reliability.png"}
    stored = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="figures")
    assert [(Path(stored) / f).read_bytes() for f in ("confusion_matrix.png", "reliability.png")] == [
        b"confusion png", b"reliability png"]
    table = client.load_table(experiment_id, "confusion_matrix.json", run_ids=[run.info.run_id])
    assert list(table.columns) == ["true", *CLASS_NAMES]
    assert list(table["true"]) == list(CLASS_NAMES)
    np.testing.assert_array_equal(table[list(CLASS_NAMES)].to_numpy(), counted)
    per_class = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/per_class.csv").splitlines()
    assert per_class[0] == "model,class,precision,recall,f1,support"
    assert [row.split(",") for row in per_class[1:]] == [
        ["baseline", name, *(str(expected[f"test_{m}_{metric}"]) for m in ("precision", "recall", "f1")), "4"]
        for name, metric in zip(CLASS_NAMES, classes)]
    assert runs.find_run(experiment_id, runs.MODEL_SHA256_TAG, "evaluated").info.run_id == run.info.run_id


def test_an_experiment_without_its_kind_gets_it_while_another_process_tags_it_too(experiment_id, tmp_path):
    """An experiment made elsewhere (the UI, older code) lacks the kind that opens it on MLflow's training
    view; two stages opening it at once both tag it, and the later insert must not fail the stage."""
    client = mlflow.MlflowClient()
    made_elsewhere = client.create_experiment("made elsewhere", artifact_location=(tmp_path / "mlruns").as_uri())
    root = store.sqlite_path(mlflow.get_tracking_uri()).parent
    kind = {"key": store.EXPERIMENT_KIND_TAG, "value": store.EXPERIMENT_KIND, "experiment_id": int(made_elsewhere)}
    with inserted_first(root / "mlflow.db", "experiment_tags", kind):
        assert store.experiment_id("made elsewhere", root) == made_elsewhere
    assert client.get_experiment(made_elsewhere).tags[store.EXPERIMENT_KIND_TAG] == store.EXPERIMENT_KIND


@pytest.fixture
def proxied_server():
    """An HTTP server behind a login on every path, /health too (as a proxy in front of MLflow may be): 401
    without credentials, else an empty experiment search."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self):
            if "Authorization" not in self.headers:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps({"experiments": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_asks_a_login_even_for_its_health_check_is_reachable(proxied_server, monkeypatch):
    """The health check sends no login: a 401 there is an answer, and the client's own request, which sends
    it, decides. With the login, the server is used; without, the line says to set it."""
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(store.TrackingUnavailable, match=r"asks for credentials \(HTTP 401\); set MLFLOW_TRACKING"):
        store.check_server(proxied_server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    store.check_server(proxied_server)


def test_a_login_in_the_tracking_uri_is_refused_without_showing_it(proxied_server):
    """urllib would take "alice:s3cret@127.0.0.1" for the host name, and the URI is in every error line."""
    login = proxied_server.replace("http://", "http://alice:s3cret@")
    with pytest.raises(store.TrackingUnavailable) as info:
        store.check_server(login)
    assert str(info.value) == (f"MLflow tracking server {proxied_server}: the URI holds a login; set "
                               "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead")


def test_a_project_whose_path_has_a_space_is_not_taken_for_a_copy(tmp_path, empty_store_file):
    """MLflow keeps the experiment's location as a URI, whose path is percent-encoded (``%20``): compared as
    the path it names, a project in "my projects" is where it was, and its copy is relocated."""
    import shutil

    root = tmp_path / "my projects" / "fmnist"
    root.mkdir(parents=True)
    shutil.copyfile(empty_store_file, root / "mlflow.db")
    with tracking_store(root) as uri:
        experiment = store.experiment_id("spaced", root)
        run_id = mlflow.MlflowClient().create_run(experiment).info.run_id
        assert "%20" in mlflow.get_experiment(experiment).artifact_location
        assert store.relocate_copied_store(uri, root) is False
    copy = tmp_path / "other place" / "fmnist"
    shutil.copytree(root, copy)
    with tracking_store(copy) as uri:
        assert store.relocate_copied_store(uri, copy) is True
        artifacts = mlflow.get_run(run_id).info.artifact_uri
        assert artifacts.startswith((copy / "mlruns").as_uri() + "/"), artifacts
        assert store.relocate_copied_store(uri, copy) is False


def test_a_notebooks_experiment_in_the_projects_store_keeps_its_artifacts(tmp_path):
    """Opened from a notebook in another folder, the project's store takes a new experiment's artifacts in
    that folder's ./mlruns (MLflow's default): the next stage of the project leaves that experiment alone, as
    it is no copied one (its folder is not in the project's mlruns/)."""
    project, notebooks = tmp_path / "project", tmp_path / "notebooks"
    project.mkdir()
    with tracking_store(project) as uri:
        store.experiment_id("project-experiment", project)
        mine = mlflow.MlflowClient().create_experiment("my-notebook", (notebooks / "mlruns" / "2").as_uri())
        with runs.tracked_run(experiment_id=mine, run_name="note") as run:
            runs.log_bytes(b"hello", "note.txt")
        assert not store.relocate_copied_store(uri, project)
        store.experiment_id("project-experiment", project)  # what every stage runs first
        where = mlflow.MlflowClient().get_run(run.info.run_id).info.artifact_uri
        assert where.startswith((notebooks / "mlruns" / "2").as_uri())
        assert Path(mlflow.artifacts.download_artifacts(f"{where}/note.txt", dst_path=str(tmp_path / "d"))
                    ).read_bytes() == b"hello"


def test_a_run_id_in_the_environment_is_not_resumed_by_a_stage(tmp_path, monkeypatch):
    """`mlflow run` and wrappers set MLFLOW_RUN_ID: a stage's start_run would resume that run, in its own
    experiment, and rename, tag and end it."""
    with tracking_store(tmp_path):
        elsewhere = mlflow.MlflowClient().create_experiment("someone-elses", (tmp_path / "theirs").as_uri())
        foreign = mlflow.MlflowClient().create_run(elsewhere)
    monkeypatch.setenv("MLFLOW_RUN_ID", foreign.info.run_id)
    with tracking_store(tmp_path):
        experiment = store.experiment_id("project", tmp_path)
        with runs.tracked_run(experiment_id=experiment, run_name="scratch") as run:
            pass
    assert run.info.run_id != foreign.info.run_id and run.info.experiment_id == experiment
    with tracking_store(tmp_path):
        monkeypatch.setenv("MLFLOW_RUN_ID", foreign.info.run_id)
        store.configure(tmp_path, existing=True)  # a reader (a notebook loading a model) keeps its caller's run
        assert os.environ["MLFLOW_RUN_ID"] == foreign.info.run_id


def test_a_store_configured_in_a_process_is_not_taken_for_one_the_user_named(tmp_path):
    """MLflow writes the URI it is pointed at into MLFLOW_TRACKING_URI: another project's reader in the same
    process (a notebook loading two projects' champions) must open its own store."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    with tracking_store(first):
        assert store.tracking_uri(second) == f"sqlite:///{second.resolve() / 'mlflow.db'}"


def test_a_store_that_refuses_a_new_experiment_says_why(tmp_path):
    """A failed create is taken for another process's win only if the experiment is then there."""
    from mlflow.exceptions import MlflowException

    def refuse(statement, parameters):
        if statement.lstrip().upper().startswith("INSERT INTO EXPERIMENTS"):
            raise PermissionError("refused by the store")

    with tracking_store(tmp_path), before_each_statement(refuse):
        with pytest.raises(MlflowException, match="refused by the store"):
            store.experiment_id("refused", tmp_path)


def test_a_store_of_another_mlflow_version_is_one_line_saying_how_to_upgrade_it(store_root):
    """MLflow checks a store's schema and migrates none but a new one: after an MLflow upgrade the project's
    store is of an older schema, which is no damaged file to move aside."""
    import contextlib
    import sqlite3

    database = store_root / "mlflow.db"
    with contextlib.closing(sqlite3.connect(database)) as con:
        con.execute("UPDATE alembic_version SET version_num = 'bf29a5ff90ea'")
        con.commit()
    with pytest.raises(store.TrackingUnavailable) as info, tracking_store(store_root):
        pass
    assert str(info.value).startswith(f"MLflow store sqlite:///{database} was written by another MLflow version "
                                      "(schema bf29a5ff90ea, this MLflow's is ")
    assert str(info.value).endswith(f"): back it up and run `mlflow db upgrade sqlite:///{database}` if it is older, "
                                    "or use the MLflow that wrote it")
