"""MLflow runs: how a stage opens one, the tags every run carries, and logging into the active run.

No file that one stage hands to the next names a run: a run is found by what it
is about, a tag holding the SHA-256 of its model file (``model_sha256``) or of
its dataset (``dataset_sha256``), in whatever store the caller points at. So
outputs made against one store work against any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

from softmax_regression.tracking.store import write_racing

MODEL_SHA256_TAG = "model_sha256"
DATASET_SHA256_TAG = "dataset_sha256"
TRAINING_SECONDS = "training_seconds"
"""The metric holding a training's wall time, from its initial weights to its last epoch."""


@contextlib.contextmanager
def tracked_run(created: bool = False, **start_run_kwargs) -> Iterator:
    """``mlflow.start_run`` that never leaves its run RUNNING: a new run ends KILLED when interrupted (SIGINT,
    or SIGTERM as the stages raise it) and FAILED on an error. A finished run resumed to log more (``run_id=``)
    gets its status back whatever happens (the work it records was done), and its end time when all went well
    (MLflow stamps a new one: the UI would show a short run lasting until then). The registry resumes a train
    run so to log a classifier into it (``pyfunc.log_model`` takes no run id); other writes name their run.
    ``created``: ``run_id`` names a run just created for this block, which ends KILLED or FAILED as a new one
    does, even when the interrupt or error comes before the block (while MLflow starts it)."""
    import mlflow

    def ended(exc: BaseException) -> str:
        return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"

    previous = None
    try:
        if start_run_kwargs.get("run_id") and not created:
            previous = mlflow.MlflowClient().get_run(start_run_kwargs["run_id"]).info
        started = mlflow.start_run(**start_run_kwargs)
    except BaseException as exc:
        if created:
            with contextlib.suppress(Exception):  # the store may be what failed: the error says so
                mlflow.MlflowClient().set_terminated(start_run_kwargs["run_id"], ended(exc))
        raise
    with started as active:
        try:
            yield active
        except BaseException as exc:
            mlflow.end_run(previous.status if previous and previous.status != "RUNNING" else ended(exc))
            raise
    if previous is not None and previous.status != "RUNNING" and previous.end_time is not None:
        mlflow.MlflowClient().set_terminated(previous.run_id, previous.status, end_time=previous.end_time)


def find_run(experiment_id: str, tag: str, value: str):
    """The newest finished run of the experiment whose tag ``tag`` is ``value``, or None."""
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.{tag} = '{value}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def git_state(cwd: str | Path | None = None) -> dict[str, str]:
    """The commit and whether the workspace differs from it (``unknown`` outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        commit, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower() if commit else "unknown"}


def standard_tags(implementation: str, params_file: str | Path, dataset_sha256: str,
                  extra: dict[str, str] | None = None, cwd: str | Path | None = None) -> dict[str, str]:
    """The tags every run carries: git state, what it is, the dataset, and ``pipeline_id``, a digest of the
    commit and the params in force that groups the runs of one pipeline execution (every stage computes the
    same value without sharing any state); then the caller's own."""
    tags = git_state(cwd)
    pipeline_id = hashlib.sha256(tags["git_commit"].encode() + b"\0" + Path(params_file).read_bytes()).hexdigest()
    tags.update(implementation=implementation, pipeline_id=pipeline_id[:16])
    tags[DATASET_SHA256_TAG] = dataset_sha256
    tags.update(extra or {})
    return tags


def log_metric_steps(steps: Iterable[tuple[int, dict[str, float]]]) -> None:
    """Metrics of many steps (``(step, {key: value})``, an epoch's say) into the active run in one batch:
    ``mlflow.log_metrics`` per step is a database transaction, or a request, each."""
    import mlflow
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    metrics = [Metric(key, float(value), timestamp, step) for step, values in steps for key, value in values.items()]
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=metrics)


def epoch_metrics(record, lr: float) -> dict[str, float]:
    """The metrics of one epoch (a ``training.history.EpochRecord`` and its learning rate)."""
    return {"train_loss": record.train_loss, "train_acc": record.train_acc, "val_acc": record.val_acc, "lr": lr}


def log_epochs(history, lrs: list[float]) -> None:
    """A whole training history into the active run, one step per epoch, in one batch."""
    log_metric_steps((record.epoch, epoch_metrics(record, lr)) for record, lr in zip(history, lrs))


def log_table(frame, artifact_file: str, run_id: str) -> None:
    """A pandas DataFrame as the table ``artifact_file`` (``.json``) of run ``run_id``, replacing one of the
    same name: ``mlflow.log_table`` appends to a table the run holds already, so evaluate, rerun on the same
    model files, would grow it by a copy each time. The same file and ``mlflow.loggedArtifacts`` tag the UI
    reads it by, written once."""
    import json

    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    if not artifact_file.endswith(".json"):
        raise ValueError(f"table artifact {artifact_file!r}: expected a .json file")
    log_bytes(frame.to_json(orient="split", index=False, date_format="iso").encode(), artifact_file, run_id)
    logged = json.loads(mlflow.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in logged:  # two evaluates of one model file (a sweep's baseline) tag its run at once
        write_racing(mlflow.MlflowClient().set_tag, run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*logged, entry]))


def log_bytes(data: bytes, artifact_file: str, run_id: str | None = None) -> None:
    """Bytes (a PNG already rendered, say) as the artifact ``artifact_file`` of run ``run_id`` (the active
    run's by default)."""
    import mlflow

    directory, name = os.path.split(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(data)
        mlflow.log_artifact(str(Path(tmp) / name), artifact_path=directory or None, run_id=run_id)
