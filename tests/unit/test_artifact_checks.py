"""What the checks of lost artifacts (``tracking.logged_models``, ``tracking.registry``) find missing, on real MLflow artifact folders and a real SQLite store."""

from __future__ import annotations

import shutil

import mlflow

from softmax_regression.tracking import runs, store
from softmax_regression.tracking.model_runs import checkpoint_artifact, listing, missing_files, run_missing_files
from softmax_regression.tracking.registry import VersionFiles
from support import tracking_store


def test_missing_files_lists_each_folder_and_names_what_is_not_there(tmp_path):
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "model.pt").write_bytes(b"x")
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "python_model.pkl").mkdir()  # a folder where a file belongs is no file
    wanted = ["MLmodel", "python_model.pkl", "artifacts/model.pt", "artifacts/other.pt", "data/model.pth"]
    assert missing_files(tmp_path.as_uri(), wanted) == ["python_model.pkl", "artifacts/other.pt", "data/model.pth"]
    assert missing_files((tmp_path / "gone").as_uri(), ["MLmodel"]) == ["MLmodel"]
    assert missing_files(tmp_path.as_uri(), []) == []


def test_run_missing_files_covers_the_model_file_and_every_logged_model(tmp_path):
    with tracking_store(tmp_path):
        experiment = store.experiment_id("artifact-checks", tmp_path)
        client = mlflow.MlflowClient()
        with mlflow.start_run(experiment_id=experiment) as run:
            runs.log_bytes(b"weights", checkpoint_artifact("scratch"))
        run_id = run.info.run_id
        assert run_missing_files(client, run_id, "scratch") == []  # no logged model: none is missing
        assert run_missing_files(client, run_id, "concise") == ["checkpoint/concise.pt"]
        shutil.rmtree(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
        assert run_missing_files(client, run_id, "scratch") == ["checkpoint/scratch.pt"]


def test_version_files_asks_the_store_once_per_version(monkeypatch):
    import softmax_regression.tracking.registry as registry

    asked = []
    monkeypatch.setattr(registry, "version_location", lambda client, name, v: f"file:///nowhere/{v}")
    monkeypatch.setattr(registry, "missing_files",
                        lambda location, files: asked.append(location[-1]) or (["MLmodel"] if location.endswith("2") else []))
    files = VersionFiles(None, "m")
    for _ in range(3):
        assert files.missing(1) == [] and files.missing("2") == ["MLmodel"]
    assert asked == ["1", "2"]
    assert files.lost() == {"2": ["MLmodel"]}


def test_listing_is_bounded():
    assert listing(["a", "b"]) == "a, b"
    assert listing(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
