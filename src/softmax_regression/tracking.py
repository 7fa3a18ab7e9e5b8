"""MLflow tracking: where runs go, what tags they carry, and how a model is logged and registered.

The store is MLflow's own default (SQLite ``mlflow.db`` with artifacts in
``mlruns/``) at the project root, so a plain ``mlflow ui`` there shows every
run; ``MLFLOW_TRACKING_URI`` points the same code at a team server.

Under ``dvc exp run --queue`` / ``--temp`` a stage runs in a temporary copy of
the repository; DVC then sets ``DVC_ROOT`` to the original root, and the
default store is resolved against it, so the runs outlive the copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


log = logging.getLogger(__name__)

RUN_INFO_FORMAT = "mlflow-run/1"


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached."""


def project_root(cwd: str | Path | None = None) -> Path:
    """The original repository root: ``DVC_ROOT`` under ``dvc exp``, else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or cwd or os.getcwd()).resolve()


def tracking_uri(cwd: str | Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else SQLite ``mlflow.db`` at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root(cwd) / 'mlflow.db'}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI, when an HTTP tracking server does not answer its health check.

    MLflow's own client retries for minutes before it gives up.
    """
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it, or unset "
            "MLFLOW_TRACKING_URI to use the local mlflow.db"
        ) from None


def configure(cwd: str | Path | None = None) -> str:
    """Point MLflow at the tracking URI (checked), with bounded HTTP retries; returns the URI."""
    import mlflow

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    uri = tracking_uri(cwd)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:"):
        initialize_sqlite_store(uri)
    return uri


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock around writes MLflow's SQLite store does not serialise itself.

    MLflow migrates an empty database without any lock, so two stages starting
    together on a fresh ``mlflow.db`` (``dvc queue start -j 2``) race and one
    fails ("table ... already exists"); setting the same registry alias from
    two processes fails on a UNIQUE constraint. The lock lives in the temp
    directory, keyed by the database path, so the project gains no file. For a
    server (or where there is no ``flock``) it does nothing.
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is None or not uri.startswith("sqlite:"):
        yield
        return
    database = uri.removeprefix("sqlite:///").split("?", 1)[0]
    key = hashlib.sha256(str(Path(database).resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"mlflow-sqlite-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def initialize_sqlite_store(uri: str) -> None:
    """Create or migrate a SQLite store's tables under :func:`store_lock`."""
    import mlflow

    with store_lock(uri):
        mlflow.MlflowClient(uri).search_experiments(max_results=1)


def experiment_id(name: str, cwd: str | Path | None = None) -> str:
    """The id of experiment ``name``, created if missing; a local store keeps artifacts in ``mlruns/``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if is_local_store(mlflow.get_tracking_uri()):
        location = (project_root(cwd) / "mlruns" / hashlib.sha256(name.encode()).hexdigest()[:12]).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it first (parallel dvc exp workers)
        return client.get_experiment_by_name(name).experiment_id


def git_state(cwd: str | Path | None = None) -> dict[str, str]:
    """The commit and whether the workspace differs from it (``unknown`` outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower() if commit else "unknown"}


def files_digest(paths: list[Path]) -> str:
    """SHA-256 over the named files' bytes, in the order given: one checksum for a dataset."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def pipeline_id(params_file: str | Path, commit: str) -> str:
    """What groups the runs of one ``dvc repro``: a digest of the commit and the params in force.

    Every stage of one execution computes the same value without sharing any
    state, and any change of code or params gives a new one.
    """
    return hashlib.sha256(commit.encode() + b"\0" + Path(params_file).read_bytes()).hexdigest()[:16]


def standard_tags(implementation: str, params_file: str | Path, dataset_sha256: str,
                  cwd: str | Path | None = None) -> dict[str, str]:
    tags = git_state(cwd)
    tags.update(implementation=implementation, dataset_sha256=dataset_sha256,
                pipeline_id=pipeline_id(params_file, tags["git_commit"]))
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_STAGE", "dvc_stage")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


@dataclass(frozen=True)
class RunInfo:
    """What a stage passes on so later stages log into the same run (a DVC out of the stage)."""
    run_id: str
    experiment_id: str
    tracking_uri: str

    def to_json(self) -> str:
        return json.dumps({"format": RUN_INFO_FORMAT, "run_id": self.run_id, "experiment_id": self.experiment_id,
                           "tracking_uri": self.tracking_uri}, indent=2) + "\n"

    @classmethod
    def read(cls, path: str | Path) -> "RunInfo":
        data = json.loads(Path(path).read_text())
        if data.get("format") != RUN_INFO_FORMAT:
            raise ValueError(f"{path} is not an {RUN_INFO_FORMAT} file")
        return cls(data["run_id"], data["experiment_id"], data["tracking_uri"])


def log_bytes(data: bytes, artifact_file: str) -> None:
    """Log bytes (a PNG already rendered, say) as the artifact ``artifact_file`` of the active run."""
    import mlflow

    directory, name = os.path.split(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        mlflow.log_artifact(str(path), artifact_path=directory or None)
