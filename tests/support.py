"""Helpers for tests that run the real pipeline in a temporary git copy of the project."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # `pipeline/` is a folder of the project, not an installed package
    sys.path.insert(0, str(PROJECT_ROOT))
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
VENV_BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a stage sees: the venv first on PATH, telemetry off, no outside tracking URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``; a project there (a copy or a clone) imports its own ``src/`` first."""
    env = dict(env or clean_env())
    if (Path(cwd) / "src").is_dir() and "PYTHONPATH" not in env:
        env["PYTHONPATH"] = str(Path(cwd) / "src")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def project_files(root: Path = PROJECT_ROOT) -> list[str]:
    """What a clone of the working tree would hold: tracked files plus untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return [rel for rel in out.split("\0") if rel and (root / rel).is_file()]


def copy_project(dest: Path, keep_lock: bool = False) -> Path:
    """A fresh git repository at ``dest`` holding the working tree's project files, committed, with no
    DVC outs and (unless ``keep_lock``) no dvc.lock, so the first ``dvc repro`` runs every stage."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        if rel == "dvc.lock" and not keep_lock:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / rel, target)
    env = clean_env()
    run(["git", "init", "-q"], dest, env)
    run(["git", "config", "user.name", "test"], dest, env)
    run(["git", "config", "user.email", "test@example.invalid"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-q", "--no-verify", "-m", "project copy"], dest, env)
    return dest


def link_or_copy(source: str, target: str) -> str:
    """``shutil.copytree``'s copy function for a built project: big files (DVC's cache, the splits: never
    written in place, only replaced) are hard-linked; everything a test or SQLite may change in place
    (params.yaml, mlflow.db) is copied."""
    if os.path.getsize(source) > 1 << 20 and not source.endswith(".db"):
        os.link(source, target)
        return target
    return shutil.copy2(source, target)


def clone_project(dest: Path, source: Path = PROJECT_ROOT) -> Path:
    """A real ``git clone`` of the committed HEAD of ``source`` (the project): what a new user or CI starts from."""
    run(["git", "clone", "-q", "--no-hardlinks", str(source), str(dest)], dest.parent)
    run(["git", "config", "user.name", "test"], dest)
    run(["git", "config", "user.email", "test@example.invalid"], dest)
    return dest


def stack_installed(project: Path) -> None:
    """``make install`` in ``project`` (a clone) finds the session's stack up to date: the files it installs
    from, older than its stamp (a clone's files carry the time of the clone)."""
    for name in ("pyproject.toml", "requirements.lock"):
        os.utime(project / name, (0, 0))


STAGE_RAN = re.compile(r"Running stage '([\w@.-]+)'")
STAGE_SKIPPED = re.compile(r"Stage '([\w@.-]+)' didn't change, skipping")


def stages_ran(dvc_output: str) -> list[str]:
    return STAGE_RAN.findall(dvc_output)


def stages_skipped(dvc_output: str) -> list[str]:
    return STAGE_SKIPPED.findall(dvc_output)


def set_param(project: Path, dotted_key: str, value) -> None:
    """Change one key of the project's params.yaml."""
    import yaml

    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    section, key = dotted_key.split(".")
    params.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


FAST_PARAMS = {"data.mirrors": [], "train.epochs": 2, "baseline.max_iter": 10}
"""A cheaper configuration of the same pipeline: every stage, out and dependency edge as with the defaults."""


def fast_copy(dest: Path) -> Path:
    """A committed git copy of the project, offline (the system copy of the data), with FAST_PARAMS."""
    project = copy_project(dest)
    for key, value in FAST_PARAMS.items():
        set_param(project, key, value)
    run(["git", "commit", "-qam", "offline, 2 epochs, short baseline"], project)
    return project


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real `mlflow server` on a free port of 127.0.0.1 with its own SQLite store and proxied artifacts
    under ``root``; yields its URI and stops it (the whole process group) afterwards."""
    import urllib.request

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(root / "server.log", "wb")
    process = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"],
        # no job consumers (MLflow's GenAI jobs, two more processes that import MLflow): as the team stack's
        stdout=log, stderr=subprocess.STDOUT, env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()


def get_json(url: str, body: dict | None = None) -> dict:
    """GET (or POST ``body`` to) an MLflow REST endpoint; the parsed answer."""
    import json
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def tracking_store(root: Path):
    """MLflow pointed at ``sqlite:///<root>/mlflow.db`` (``store.configure`` with no MLFLOW_TRACKING_URI);
    afterwards MLflow's tracking URI and the environment are what they were."""
    import mlflow
    import pytest
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils

    from softmax_regression.tracking import store

    previous = utils._tracking_uri
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)  # the registry follows the tracking URI here
        mp.setattr(registry_utils, "_registry_uri", None)
        for name, default in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")):
            mp.setenv(name, os.environ.get(name, default))  # configure() would set them for good
        try:
            uri = store.configure(root)
            assert uri == f"sqlite:///{root.resolve() / 'mlflow.db'}"
            yield uri
        finally:
            mlflow.set_tracking_uri(previous)


@contextlib.contextmanager
def before_each_statement(hook) -> Iterator[None]:
    """``hook(statement, parameters)`` before each SQL statement of this process's SQLAlchemy engines (MLflow's
    store, say) in the block."""
    import sqlalchemy

    def listener(connection, cursor, statement, parameters, context, executemany):
        hook(statement, parameters)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", listener)
    try:
        yield
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", listener)


@contextlib.contextmanager
def inserted_first(database: Path, table: str, row: dict[str, object], marker: str = "") -> Iterator[None]:
    """Another process wins a race in the block: just before this process's first insert into ``table`` (one
    whose parameters mention ``marker``), ``row`` is inserted into the SQLite ``database`` and committed,
    between what MLflow read and what it writes. The block must make that insert."""
    import sqlite3

    raced = []

    def hook(statement: str, parameters) -> None:
        if not raced and statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()} ") \
                and marker in str(parameters):
            raced.append(statement)
            with contextlib.closing(sqlite3.connect(database)) as other:
                other.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                              tuple(row.values()))
                other.commit()

    with before_each_statement(hook):
        yield
    assert raced, f"the block inserted nothing into {table}"


@contextlib.contextmanager
def clean_environment():
    """``os.environ`` as :func:`support.clean_env` makes it for a process, for the block (the processes started
    in it inherit it); afterwards as it was."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            mp.delenv(name)
        for name, value in clean_env().items():
            mp.setenv(name, value)
        yield


@contextlib.contextmanager
def dvc_repo(project: Path, init: bool = False):
    """The DVC repository at ``project`` (``init``: after `dvc init`) through DVC's Python API, in ``project`` (its
    paths, ``dvc.yaml`` first, are relative to the working directory, as on the command line) and in the
    environment of :func:`support.clean_env`, which the stages it runs inherit."""
    import warnings

    import pytest
    from dvc.repo import Repo

    with clean_environment(), pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # DVC's, which its command line does not show either
        mp.chdir(project)
        if init:
            Repo.init(str(project)).close()
        with Repo(str(project)) as repo:
            yield repo


def queued_experiment(project: Path, sets: list[str], env: dict[str, str] | None = None) -> str:
    """``dvc exp run --queue -S ...`` for each of ``sets`` (``key=value``); returns the experiment's name."""
    flags = [flag for value in sets for flag in ("-S", value)]
    output = run(["dvc", "exp", "run", "--queue", *flags], project, env).stdout
    return re.search(r"Queued experiment '([\w.-]+)'", output).group(1)


def queue_status(project: Path, names: list[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """``dvc queue status`` of the experiments ``names``: Queued, Running, Success, Failed."""
    status = {}
    for line in run(["dvc", "queue", "status"], project, env).stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and re.fullmatch(r"[0-9a-f]{7}", fields[0]) and fields[1] in names:
            status[fields[1]] = fields[-1]
    return status


def wait_for_queue(project: Path, names: list[str], env: dict[str, str] | None = None, timeout: float = 1500,
                   ask_every: float = 15.0) -> dict[str, str]:
    """Wait until none of the queued experiments ``names`` is queued or running; returns their final status
    (``dvc queue status``: the DVC queue as docs/tuning.md runs it by hand). DVC is asked once all of them
    have their git ref (an experiment that succeeded), or every ``ask_every`` seconds (one that failed has
    none): each ask is a DVC process and an inspection of its Celery workers, a CPU-second the sweep needs."""
    deadline, asked = time.monotonic() + timeout, -math.inf
    while True:
        refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], project, env).stdout.split()
        if {ref.rpartition("/")[2] for ref in refs} >= set(names) or time.monotonic() - asked >= ask_every:
            status, asked = queue_status(project, names, env), time.monotonic()
            if not [name for name, s in status.items() if s in ("Queued", "Running")]:
                return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue still runs after {timeout:.0f} s: {status}")
        time.sleep(0.5)
