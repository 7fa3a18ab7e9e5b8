"""Failures as the one line a command prints; MLflow's name the store they came from."""

from __future__ import annotations

import mlflow
import pytest

from softmax_regression.errors import failure_line, mlflow_error_line, one_line, sentences
from support import tracking_store


def raised(call) -> BaseException:
    with pytest.raises(BaseException) as info:
        call()
    return info.value


def test_mlflows_own_exception_names_the_store_and_the_cause(store_root):
    with tracking_store(store_root) as uri:
        exc = raised(lambda: mlflow.MlflowClient().get_run("no-such-run"))
        assert failure_line(exc) == f"MLflow store {uri}: Run with id=no-such-run not found"


def test_an_internal_error_inside_mlflow_names_the_store_and_its_type(store_root):
    """What a value MLflow does not expect gives: an AttributeError deep in its code, not an MlflowException."""
    with tracking_store(store_root) as uri:
        with mlflow.start_run() as run:
            exc = raised(lambda: mlflow.MlflowClient().log_batch(run.info.run_id, metrics=[None]))
        assert isinstance(exc, AttributeError)
        assert mlflow_error_line(exc) == f"MLflow store {uri}: AttributeError: {one_line(exc)}"


def test_an_os_error_raised_by_the_standard_library_for_mlflow_is_mlflows(store_root):
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    with tracking_store(store_root) as uri:
        exc = raised(lambda: LocalArtifactRepository(str(store_root / "a")).log_artifact(
            str(store_root / "missing.png")))
        assert isinstance(exc, FileNotFoundError)
        assert failure_line(exc) == f"MLflow store {uri}: {exc}"


def test_the_projects_own_errors_are_not_mlflows(store_root):
    def ours():
        raise ValueError("models/scratch.pt is damaged")

    with tracking_store(store_root):
        exc = raised(ours)
    assert mlflow_error_line(exc) is None
    assert failure_line(exc) == "models/scratch.pt is damaged"
    assert failure_line(RuntimeError("")) == "RuntimeError"


def test_a_paragraph_is_cut_at_a_sentence_within_the_limit():
    paragraph = "The store is in maintenance mode. " * 20 + "See the docs."
    assert sentences(paragraph) == ("The store is in maintenance mode. " * 8).strip()
    assert sentences("x" * 400) == "x" * 297 + "..."
    assert sentences("first line\nsecond") == "first line"
    assert len(sentences(paragraph, limit=60)) <= 60
