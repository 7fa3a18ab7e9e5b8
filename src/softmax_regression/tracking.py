"""MLflow tracking: where runs go, what tags they carry, and how a stage finds the run it logs into.

MLflow is a side channel. No file that one step hands to the next names a
run: a run is found by what it is about, a tag holding the SHA-256 of the
model file (``model_sha256``) or of the dataset (``dataset_sha256``), in
whatever store the caller points at. Where that store has no such run (a
fresh store, another server), the caller creates one. So outputs made
against one store work against any other.

The default store is MLflow's own default (SQLite ``mlflow.db`` with
artifacts in ``mlruns/``) under a project root the caller passes in;
``MLFLOW_TRACKING_URI`` points the same code at a team server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

MODEL_SHA256_TAG = "model_sha256"
DATASET_SHA256_TAG = "dataset_sha256"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow's kind of a model-training experiment. MLflow 3.17's UI does not read it (it opens every experiment
on its GenAI overview): the URL that ``pipeline.ui`` prints names the training-runs view instead."""


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be used: a server that does not answer, a SQLite file that cannot be
    written or is no database, a folder that does not exist."""


def tracking_uri(root: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else SQLite ``mlflow.db`` in ``root``.

    A relative SQLite path or folder in the variable (``sqlite:///mlflow.db``, as ``mlflow ui`` is often
    pointed) is taken relative to ``root``, not to the working directory: where a stage runs in a temporary
    copy of the project (a queued experiment), the runs logged there would go with the copy.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        path, query = (uri[len("sqlite:///"):].split("?", 1) + [""])[:2]
        if path and path != ":memory:" and not Path(path).is_absolute():
            return f"sqlite:///{Path(root).resolve() / path}" + (f"?{query}" if query else "")
    elif "://" not in uri and not uri.startswith("file:") and not Path(uri).is_absolute() and uri not in REMOTE_NAMES:
        return str(Path(root).resolve() / uri)
    return uri


REMOTE_NAMES = ("databricks", "databricks-uc", "uc")
"""Tracking URIs that are names, not folders."""


def serves_artifacts(uri: str) -> bool:
    """A tracking server (or a hosted service) that decides where artifacts go. Any other store, a SQLite
    file, a folder or a database opened directly (``postgresql://``), would put them under ``./mlruns`` of
    whatever directory a stage runs in."""
    return uri.startswith(("http://", "https://")) or uri in REMOTE_NAMES or uri.startswith(("databricks://", "uc:"))


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI, when an HTTP tracking server does not answer its health check.

    MLflow's own client retries for minutes before it gives up.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import ssl

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=tls_context(uri)) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise TrackingUnavailable(
                f"MLflow tracking server {uri}: its TLS certificate is not trusted ({reason.verify_message}); set "
                "MLFLOW_TRACKING_SERVER_CERT_PATH to the certificate of the CA that signed it") from None
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it, or unset "
            "MLFLOW_TRACKING_URI to use the local mlflow.db"
        ) from None


def tls_context(uri: str):
    """The TLS context MLflow's own client would verify an ``https`` server with: the CA bundle of
    ``MLFLOW_TRACKING_SERVER_CERT_PATH`` where set, no verification under ``MLFLOW_TRACKING_INSECURE_TLS``."""
    if not uri.startswith("https://"):
        return None
    import ssl

    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").strip().lower() == "true":
        return ssl._create_unverified_context()
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


def check_credentials(uri: str) -> None:
    """Fail before any work, in one line naming the server, where it refuses the client's credentials
    (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, or ``~/.mlflow/credentials``): MLflow itself
    says so only at the first write, after the training, in a paragraph."""
    if not uri.startswith(("http://", "https://")):
        return
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as exc:
        if exc.error_code != "UNAUTHENTICATED" and "401" not in str(exc):
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} refused the credentials of {user!r} (HTTP 401); check "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" if user else
            f"MLflow tracking server {uri} asks for credentials (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD") from None


def check_not_a_folder(uri: str) -> None:
    """Refuse a folder as the store (``file:///...`` or a bare path: MLflow's file store), naming the URI and
    what to use instead. MLflow 3 refuses to write one with a paragraph that names neither the URI nor a
    database for it; ``MLFLOW_ALLOW_FILE_STORE=true`` is MLflow's own way past that, and is honoured here."""
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme not in ("", "file") or uri in REMOTE_NAMES:
        return
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() == "true":
        return
    folder = Path(urllib.parse.urlparse(uri).path if scheme else uri)
    database = f"sqlite:///{folder.parent / 'mlflow.db'}"  # beside the folder, as MLflow's own default
    raise TrackingUnavailable(
        f"MLflow store {uri} is a folder (MLflow's file store, which MLflow 3 no longer writes); use a database: "
        f"MLFLOW_TRACKING_URI={database} (`mlflow migrate-filestore --source {folder} --target {database}` moves "
        "its runs there), a tracking server, or unset MLFLOW_TRACKING_URI for the project's own mlflow.db")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI (None for an in-memory one)."""
    rest = uri.split(":", 1)[1].split("?", 1)[0]
    if not rest.startswith("///"):
        return None
    path = rest[3:]
    return Path(path) if path and path != ":memory:" else None


def check_sqlite_writable(uri: str) -> None:
    """Fail before any work, naming the URI, where a SQLite store cannot be written.

    MLflow would create a missing folder's database silently (a typo in the
    URI becomes a new, empty store) and find a read-only one only at the
    first write, after the training, with pages of SQLAlchemy output.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    folder = path.parent
    if not folder.is_dir():
        raise TrackingUnavailable(f"MLflow store {uri}: folder {folder} does not exist; create it or fix "
                                  "MLFLOW_TRACKING_URI")
    if path.exists():
        if not path.is_file():
            raise TrackingUnavailable(f"MLflow store {uri}: {path} is not a file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise TrackingUnavailable(f"MLflow store {uri} is read-only ({path}); make it writable or point "
                                      "MLFLOW_TRACKING_URI at another store")
    if not os.access(folder, os.W_OK | os.X_OK):  # SQLite writes its journal beside the database
        raise TrackingUnavailable(f"MLflow store {uri}: folder {folder} is read-only (SQLite needs to write "
                                  "its journal there); make it writable or point MLFLOW_TRACKING_URI elsewhere")


def configure(root: str | Path, existing: bool = False) -> str:
    """Point MLflow at the tracking URI, checked before any work; returns the URI.

    A server must answer its health check; a SQLite store must be writable, in
    a folder that exists, and a database (it is created or migrated here).
    HTTP retries are bounded. ``existing`` is for a reader: a SQLite store
    that is not there yet is an error, not a new empty database.
    """
    import mlflow

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars of one small file, in a stage's log
    uri = tracking_uri(root)
    check_not_a_folder(uri)
    check_reachable(uri)
    check_credentials(uri)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:"):
        path = sqlite_path(uri)
        if existing and path is not None and not path.is_file():
            raise TrackingUnavailable(f"no MLflow store at {path}: run the pipeline in {path.parent} first, "
                                      "or set MLFLOW_TRACKING_URI to the store that holds the model")
        check_sqlite_writable(uri)
        initialize_sqlite_store(uri)
    return uri


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock around writes MLflow's SQLite store does not serialise itself.

    MLflow migrates an empty database without any lock, so two processes
    starting together on a fresh ``mlflow.db`` race and one fails ("table ...
    already exists"); the champion's compare-and-set must not interleave
    either. The lock lives in the temp directory, keyed by the database path,
    so the project gains no file. For a server (or where there is no
    ``flock``) it does nothing.
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None
    database = sqlite_path(uri) if uri.startswith("sqlite:") else None
    if fcntl is None or database is None:
        yield
        return
    key = hashlib.sha256(str(database.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"mlflow-sqlite-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def initialize_sqlite_store(uri: str) -> None:
    """Create or migrate a SQLite store's tables under :func:`store_lock`; a file that is no MLflow
    database is one line naming it."""
    import mlflow

    with store_lock(uri):
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
        except Exception as exc:  # sqlite3 / SQLAlchemy / alembic raise many types, with pages of text
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise TrackingUnavailable(
                f"MLflow store {uri} cannot be opened as an MLflow database ({reason[0] if reason else type(exc).__name__}); "
                "move the file aside or point MLFLOW_TRACKING_URI at another store"
            ) from None


@contextlib.contextmanager
def tracked_run(**start_run_kwargs) -> Iterator:
    """``mlflow.start_run`` that never leaves its run RUNNING.

    A new run that is interrupted (SIGINT, or SIGTERM as the stages raise it)
    ends KILLED, one that fails ends FAILED. A finished run resumed to log
    more (``run_id=``) gets its previous status back whatever happens: the
    work it records was done. Resumed and ended without error, it also gets
    its end time back (MLflow stamps a new one, and the UI would show a
    short run as lasting until evaluate logged into it).
    """
    import mlflow

    previous = None
    if start_run_kwargs.get("run_id"):
        previous = mlflow.MlflowClient().get_run(start_run_kwargs["run_id"]).info
    with mlflow.start_run(**start_run_kwargs) as active:
        try:
            yield active
        except BaseException as exc:
            if previous and previous.status != "RUNNING":
                status = previous.status
            else:
                status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            mlflow.end_run(status)
            raise
    if previous is not None and previous.status != "RUNNING" and previous.end_time is not None:
        mlflow.MlflowClient().set_terminated(previous.run_id, previous.status, end_time=previous.end_time)


def experiment_id(name: str, root: str | Path) -> str:
    """The id of experiment ``name``, created if missing, of the model-training kind.

    A local store keeps the artifacts in ``mlruns/`` under ``root``; a store
    copied or moved with its project is first pointed at the new ``mlruns/``
    (:func:`relocate_copied_store`).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    relocate_copied_store(mlflow.get_tracking_uri(), root)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if not serves_artifacts(mlflow.get_tracking_uri()):
            location = (Path(root).resolve() / "mlruns" / hashlib.sha256(name.encode()).hexdigest()[:12]).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:  # another process created it first (parallel workers)
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":  # MLflow: "must be in the 'active' state", at the first run
        raise TrackingUnavailable(
            f"MLflow store {mlflow.get_tracking_uri()}: experiment {name!r} (id {experiment.experiment_id}) is "
            f"deleted; restore it (`mlflow experiments restore -x {experiment.experiment_id}`, or in the UI) or set "
            "tracking.experiment to another name")
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _local_path(location: str) -> str:
    return location[len("file://"):] if location.startswith("file://") else location


def relocate_copied_store(uri: str, root: str | Path) -> bool:
    """Point a project's own SQLite store, copied or moved with the project, at the project's ``mlruns/``.

    MLflow keeps every local artifact location as an absolute path (it
    resolves relative ones when the experiment is created, and the API has no
    way to change one). So the ``mlflow.db`` of ``cp -a proj proj2`` still
    sends proj2's new runs, and the artifacts of its old ones, to
    ``proj/mlruns/``. A store that lies inside ``root`` belongs to this
    project: every location in it under another folder's ``mlruns/`` is
    rewritten to this project's (the copy brought ``mlruns/`` along). A store
    elsewhere (``MLFLOW_TRACKING_URI``) is shared on purpose and left alone.
    Returns whether anything was rewritten.
    """
    import sqlite3

    path = sqlite_path(uri) if uri.startswith("sqlite:") else None
    root = Path(root).resolve()
    if path is None or not path.is_file() or not path.resolve().is_relative_to(root):
        return False
    here = str(root / "mlruns")
    with store_lock(uri), contextlib.closing(sqlite3.connect(path)) as con:
        elsewhere = set()
        for (location,) in con.execute("SELECT artifact_location FROM experiments"):
            local = _local_path(location or "")
            if "/mlruns/" in local and not local.startswith(here + "/"):
                elsewhere.add(local[:local.rindex("/mlruns/")] + "/mlruns")
        if not elsewhere:
            return False
        tables = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in con.execute(f'PRAGMA table_info("{table}")')
                       if "CHAR" in (row[2] or "").upper() or "TEXT" in (row[2] or "").upper()]
            for column in columns:
                for old in elsewhere:
                    for before, after in ((f"file://{old}/", f"file://{here}/"), (f"{old}/", f"{here}/")):
                        con.execute(
                            f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                            f'WHERE substr("{column}", 1, ?) = ?',
                            (after, len(before) + 1, len(before), before))
        con.commit()
    log.info("MLflow store %s was copied or moved with its project: artifact locations under %s now point "
             "at %s", uri, ", ".join(sorted(elsewhere)), here)
    return True


def find_run(experiment_id: str, tag: str, value: str):
    """The newest finished run of the experiment whose tag ``tag`` is ``value``, or None."""
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.{tag} = '{value}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0] if runs else None


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


def pipeline_id(params_file: str | Path, commit: str) -> str:
    """What groups the runs of one pipeline execution: a digest of the commit and the params in force.

    Every step of one execution computes the same value without sharing any
    state, and any change of code or params gives a new one.
    """
    return hashlib.sha256(commit.encode() + b"\0" + Path(params_file).read_bytes()).hexdigest()[:16]


def standard_tags(implementation: str, params_file: str | Path, dataset_sha256: str,
                  extra: dict[str, str] | None = None, cwd: str | Path | None = None) -> dict[str, str]:
    """The tags every run carries: git state, what it is, the dataset, the execution, and the caller's own."""
    tags = git_state(cwd)
    tags.update(implementation=implementation, pipeline_id=pipeline_id(params_file, tags["git_commit"]))
    tags[DATASET_SHA256_TAG] = dataset_sha256
    tags.update(extra or {})
    return tags


def log_metric_steps(steps: Iterable[tuple[int, dict[str, float]]]) -> None:
    """Metrics of many steps (``(step, {key: value})``, an epoch's say) into the active run in one batch:
    ``mlflow.log_metrics`` per step is a database transaction, or a request, each."""
    import time

    import mlflow
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    metrics = [Metric(key, float(value), timestamp, step) for step, values in steps for key, value in values.items()]
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=metrics)


def log_table(frame, artifact_file: str) -> None:
    """A pandas DataFrame as the table ``artifact_file`` (``.json``) of the active run, replacing one of
    the same name.

    ``mlflow.log_table`` appends the rows to a table the run holds already, so
    a stage that logs again into an existing run (evaluate, rerun on the same
    model files) would grow the table by a copy each time. This writes the same
    file (pandas' ``split`` JSON) and the same ``mlflow.loggedArtifacts`` tag
    the MLflow UI reads it by, once.
    """
    import json

    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    if not artifact_file.endswith(".json"):
        raise ValueError(f"table artifact {artifact_file!r}: expected a .json file")
    log_bytes(frame.to_json(orient="split", index=False, date_format="iso").encode(), artifact_file)
    run = mlflow.get_run(mlflow.active_run().info.run_id)
    logged = json.loads(run.data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in logged:
        mlflow.set_tag(MLFLOW_LOGGED_ARTIFACTS, json.dumps([*logged, entry]))


def log_bytes(data: bytes, artifact_file: str) -> None:
    """Log bytes (a PNG already rendered, say) as the artifact ``artifact_file`` of the active run."""
    import mlflow

    directory, name = os.path.split(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        mlflow.log_artifact(str(path), artifact_path=directory or None)
