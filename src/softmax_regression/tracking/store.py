"""The MLflow store: where runs go, checked before any work, and the experiment the stages log into.

MLflow's own default (SQLite ``mlflow.db``, artifacts in ``mlruns/``) under a project root the caller passes in,
or ``MLFLOW_TRACKING_URI``. MLflow finds a store it cannot use at the first write, after the training, in pages
of text, or retries for minutes: :func:`configure` fails first, in one line naming the store (test_faults.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

REMOTE_NAMES = ("databricks", "databricks-uc", "uc")  # tracking URIs that are names, not folders
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow's kind of a model-training experiment (its UI opens every experiment on the GenAI overview yet)."""


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be used: a server that does not answer, a store that cannot be written."""


def tracking_uri(root: str | Path) -> str:
    """``MLFLOW_TRACKING_URI``, else SQLite ``mlflow.db`` in ``root``; a relative path is ``root``'s, not the
    cwd's (a queued experiment runs in a temporary copy)."""
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


def serves_artifacts(uri: str) -> bool:
    """A server that decides where artifacts go; any other store would put them in ``./mlruns`` of the cwd."""
    return uri.startswith(("http://", "https://")) or uri in REMOTE_NAMES or uri.startswith(("databricks://", "uc:"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI (None for an in-memory one or another store)."""
    rest = uri.split(":", 1)[1].split("?", 1)[0] if uri.startswith("sqlite:") else ""
    path = rest[3:] if rest.startswith("///") else ""
    return Path(path) if path and path != ":memory:" else None


def _unreachable(uri: str, reason) -> None:
    import ssl

    if isinstance(reason, ssl.SSLCertVerificationError):
        raise TrackingUnavailable(
            f"MLflow tracking server {uri}: its TLS certificate is not trusted ({reason.verify_message}); set "
            "MLFLOW_TRACKING_SERVER_CERT_PATH to the certificate of the CA that signed it") from None
    raise TrackingUnavailable(f"MLflow tracking server {uri} is unreachable ({reason}); start it, or unset "
                              "MLFLOW_TRACKING_URI to use the local mlflow.db") from None


def check_server(uri: str, timeout: float = 5.0) -> None:
    """An HTTP server answers its health check (TLS verified as MLflow's client does) and takes our credentials."""
    import ssl

    import mlflow
    from mlflow.exceptions import MlflowException

    context = None
    if uri.startswith("https://"):
        insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").strip().lower() == "true"
        context = ssl._create_unverified_context() if insecure else ssl.create_default_context(
            cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    parts = urllib.parse.urlsplit(uri)
    if parts.username is not None or parts.password is not None:  # urllib would take them for the host name
        raise TrackingUnavailable(
            f"MLflow tracking server {parts._replace(netloc=parts.netloc.rpartition('@')[2]).geturl()}: the URI holds "
            "a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead")
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout, context=context) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
            pass  # it answered (a proxy asking for the login on every path, say): the client's request decides
        else:
            _unreachable(uri, getattr(exc, "reason", exc))
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
    """A folder (MLflow's file store, which MLflow 3 refuses in a paragraph), unless MLFLOW_ALLOW_FILE_STORE."""
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


def check_sqlite_writable(uri: str, existing: bool = False) -> None:
    """A writable file in a writable folder that exists (MLflow makes a typo a new, empty store); ``existing``:
    a reader's store must be there already."""
    path = sqlite_path(uri)
    if path is None:
        return
    folder = path.parent
    if existing and not path.is_file():
        raise TrackingUnavailable(f"no MLflow store at {path}: run the pipeline in {folder} first, "
                                  "or set MLFLOW_TRACKING_URI to the store that holds the model")
    if not folder.is_dir():
        raise TrackingUnavailable(f"MLflow store {uri}: folder {folder} does not exist; create it or fix "
                                  "MLFLOW_TRACKING_URI")
    if path.exists() and not path.is_file():
        raise TrackingUnavailable(f"MLflow store {uri}: {path} is not a file")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise TrackingUnavailable(f"MLflow store {uri} is read-only ({path}); make it writable or point "
                                  "MLFLOW_TRACKING_URI at another store")
    if not os.access(folder, os.W_OK | os.X_OK):  # SQLite writes its journal beside the database
        raise TrackingUnavailable(f"MLflow store {uri}: folder {folder} is read-only (SQLite needs to write "
                                  "its journal there); make it writable or point MLFLOW_TRACKING_URI elsewhere")


BUSY_TIMEOUT = 60.0
"""Seconds a process waits for a SQLite store another process holds locked (a backup, a ``sqlite3`` shell,
another process's long write) before giving up: longer than MLflow's own writes and a backup of the store."""
BUSY_TIMEOUT_VARIABLE = "FMNIST_STORE_BUSY_TIMEOUT"
"""Sets another wait in seconds (the tests' shorter one)."""


def busy_timeout() -> float:
    return float(os.environ.get(BUSY_TIMEOUT_VARIABLE) or BUSY_TIMEOUT)


def wait_while_locked(uri: str) -> None:
    """If another process holds the SQLite store locked, say so in one line and wait for it (at most
    :func:`busy_timeout`); past that, one line saying it is locked and to retry. Every SQLite connection of this
    process then waits as long for a lock (``PRAGMA busy_timeout``), MLflow's too: SQLite's default is 5 s."""
    import sqlite3

    import sqlalchemy

    path, timeout = sqlite_path(uri), busy_timeout()
    if not sqlalchemy.event.contains(sqlalchemy.engine.Engine, "connect", _set_busy_timeout):
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _set_busy_timeout)
    if path is None or not path.is_file():
        return

    def lockable(wait: float) -> bool:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=wait, isolation_level=None)) as con:
                con.execute("BEGIN IMMEDIATE")  # a write lock, taken and given back: what a writer would need
                con.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                return False
        except sqlite3.Error:  # not a database: initialize_sqlite_store says so
            pass
        return True

    if lockable(0):
        return
    log.warning("MLflow store %s is locked by another process (a backup, a sqlite3 shell, another writer): "
                "waiting for it, at most %.0f s", uri, timeout)
    if not lockable(timeout):
        raise TrackingUnavailable(f"MLflow store {uri} is still locked by another process after {timeout:.0f} s; "
                                  "the store itself is fine: retry once that process is done")


def _set_busy_timeout(connection, record) -> None:
    if type(connection).__module__.startswith("sqlite3"):
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout() * 1000)}")


def configure(root: str | Path, existing: bool = False) -> str:
    """Point MLflow at the store of ``root`` (:func:`tracking_uri`), checked, a new SQLite one created."""
    import mlflow

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars of one small file, in a stage's log
    if not existing:  # a writer's: a run id left by `mlflow run` or a wrapper would make every start_run resume
        os.environ.pop("MLFLOW_RUN_ID", None)  # that run, in its own experiment (a reader keeps its caller's)
    uri = tracking_uri(root)
    check_not_a_folder(uri)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    named = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # MLflow writes the URI into MLFLOW_TRACKING_URI too: the next configure in this process (another project's
    # reader) would take it for one the user named and open this store
    if named is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = named
    if uri.startswith("sqlite:"):
        check_sqlite_writable(uri, existing)
        wait_while_locked(uri)
        initialize_sqlite_store(uri)
    return uri


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """A file lock (in the temp folder) around what MLflow's SQLite store does not serialise: migrating a new
    database (two processes race: "table ... already exists") and the champion's compare-and-set."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    import fcntl

    key = hashlib.sha256(str(database.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"mlflow-sqlite-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def initialize_sqlite_store(uri: str) -> None:
    """Create a new SQLite store under :func:`store_lock` (MLflow migrates a store only as it creates it); a file
    that is no MLflow database, or one of another MLflow version, is one line."""
    import mlflow

    with store_lock(uri):
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
        except Exception as exc:  # sqlite3 / SQLAlchemy / alembic raise many types, with pages of text
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            if reason and "database is locked" in reason[0]:  # locked again after the wait: the store is fine
                raise TrackingUnavailable(f"MLflow store {uri} is locked by another process; the store itself is "
                                          "fine: retry once that process is done") from None
            schema = re.search(r"found version (\w+), but expected (\w+)", str(exc))
            if schema:  # MLflow migrates a store only as it creates it
                raise TrackingUnavailable(
                    f"MLflow store {uri} was written by another MLflow version (schema {schema[1]}, this MLflow's "
                    f"is {schema[2]}): back it up and run `mlflow db upgrade {uri}` if it is older, or use the "
                    "MLflow that wrote it") from None
            raise TrackingUnavailable(
                f"MLflow store {uri} cannot be opened as an MLflow database ({reason[0] if reason else type(exc).__name__}); "
                "move the file aside or point MLFLOW_TRACKING_URI at another store"
            ) from None


ARTIFACT_COLUMNS = {"experiments": ("artifact_location",), "runs": ("artifact_uri",),
                    "logged_models": ("artifact_location",), "model_versions": ("source", "storage_location")}
"""Where MLflow's SQLite schema keeps the absolute artifact locations of ``mlruns/``."""


def relocate_copied_store(uri: str, root: str | Path) -> bool:
    """Point a project's own SQLite store, copied or moved with the project, at the project's ``mlruns/``.

    MLflow keeps local artifact locations as absolute paths and has no API to change one: the ``mlflow.db`` of
    ``cp -a proj proj2`` sends proj2's runs to ``proj/mlruns/``. A store inside ``root`` is the project's, and
    the locations under the ``mlruns/`` of the experiments its stages made (:func:`experiment_folder`) are
    rewritten to this one's; a store elsewhere is shared on purpose and left alone (test_tracking.py
    copies a built project and reads its runs and champion; test_tracking_writes.py keeps a notebook's)."""
    import sqlite3

    path, root = sqlite_path(uri), Path(root).resolve()
    if path is None or not path.is_file() or not path.resolve().is_relative_to(root):
        return False
    here, here_uri = str(root / "mlruns"), (root / "mlruns").as_uri()  # a URI's path is percent-encoded
    with store_lock(uri), contextlib.closing(sqlite3.connect(path)) as con:
        elsewhere = set()  # as stored: the prefixes to rewrite
        for name, location in con.execute("SELECT name, artifact_location FROM experiments"):
            stored = (location or "").removeprefix("file://")
            local = urllib.parse.unquote(stored) if (location or "").startswith("file://") else stored
            # only an experiment a stage made (mlruns/<its folder>): one a notebook made in the store keeps its
            # artifacts in that notebook's ./mlruns (MLflow's default), which is not the project's to move
            if local.endswith(f"/mlruns/{experiment_folder(name)}") and not local.startswith(here + "/"):
                elsewhere.add(stored[:stored.rindex("/mlruns/")] + "/mlruns")
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, columns in ARTIFACT_COLUMNS.items():
            for column in columns if table in tables else ():
                for old in elsewhere:
                    for before, after in ((f"file://{old}/", f"{here_uri}/"), (f"{old}/", f"{here}/")):
                        con.execute(f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                                    f'WHERE substr("{column}", 1, ?) = ?', (after, len(before) + 1, len(before), before))
        con.commit()
    if elsewhere:
        log.info("MLflow store %s was copied or moved with its project: artifact locations under %s now point "
                 "at %s", uri, ", ".join(sorted(urllib.parse.unquote(old) for old in elsewhere)), here)
    return bool(elsewhere)


LOST_RACE = ("unique constraint", "duplicate key", "duplicate entry")
"""What a database says of an insert another writer made first (SQLite, PostgreSQL, MySQL)."""


def write_racing(write, *args) -> None:
    """An MLflow write of a row another process may create at the same moment (an experiment's tag, a run's
    tag, a new model's ``@champion``, the tag of a version two machines registered): MLflow reads, then
    inserts, and the writer that loses the race fails on the row's key. Written again, the row is there and
    is updated (the registry's champion is then read again, which corrects a stale value)."""
    from mlflow.exceptions import MlflowException

    try:
        write(*args)
    except MlflowException as exc:
        if not any(marker in str(exc).lower() for marker in LOST_RACE):
            raise
        write(*args)


def experiment_folder(name: str) -> str:
    """The folder of ``mlruns/`` that holds the artifacts of the experiment ``name`` a stage creates."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def experiment_id(name: str, root: str | Path) -> str:
    """The id of experiment ``name``, created if missing (artifacts in ``root/mlruns/`` for a local store)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    relocate_copied_store(mlflow.get_tracking_uri(), root)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if not serves_artifacts(mlflow.get_tracking_uri()):
            location = (Path(root).resolve() / "mlruns" / experiment_folder(name)).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:  # another process created it first (parallel workers), or the store refused
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":  # MLflow: "must be in the 'active' state", at the first run
        raise TrackingUnavailable(
            f"MLflow store {mlflow.get_tracking_uri()}: experiment {name!r} (id {experiment.experiment_id}) is "
            f"deleted; restore it (`mlflow experiments restore -x {experiment.experiment_id}`, or in the UI) or set "
            "tracking.experiment to another name")
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        write_racing(client.set_experiment_tag, experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id
