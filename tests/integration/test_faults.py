"""Faults of the stores, the disk and the process, each with real processes, files and mounts.

Every case checks what a user gets: one line naming what is at fault, a
non-zero exit, the previous outputs as they were (no half-written or mixed
ones, no temporaries left), no MLflow run left RUNNING, and a next normal
``dvc repro`` (or stage) that completes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from softmax_regression.tracking import store
from support import clean_env, link_or_copy, run, set_param

OUTPUT_DIRS = ("models", "reports", "data/processed")


@pytest.fixture
def built(fault_project, tmp_path) -> Path:
    """A copy of a project where the (fast) pipeline ran: outputs, DVC cache, MLflow store and all."""
    return Path(shutil.copytree(fault_project[0], tmp_path / "p", symlinks=True, copy_function=link_or_copy))


class Training:
    """``python -m pipeline train_scratch -v`` started in ``project``, its stderr drained by a thread;
    :meth:`wait_for_epoch` returns once the first epoch is logged (imports done, training under way)."""

    def __init__(self, project: Path):
        import threading

        self.lines: list[str] = []
        self.epoch = threading.Event()
        # Ctrl-C reaches a stage whose SIGINT is at its default. A pytest started as a background job of
        # a non-interactive shell has SIGINT ignored, and a child inherits an ignored signal (but not a
        # handler): handle it here while the stage starts, so the stage sees SIGINT as a user's shell gives it.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "train_scratch", "--no-progress", "-v"],
                cwd=project, env=clean_env(PYTHONPATH=str(project / "src")), stderr=subprocess.PIPE, text=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if "epoch {" in line:
                self.epoch.set()

    def wait_for_epoch(self, timeout: float = 120) -> None:
        assert self.epoch.wait(timeout), "".join(self.lines[-20:])
        assert self.proc.poll() is None

    def finish(self, timeout: float = 120) -> str:
        self.proc.wait(timeout)
        self.reader.join(timeout)
        return "".join(self.lines)


def stage(project: Path, name: str, *args: str, env: dict | None = None, timeout: float = 300):
    return run([sys.executable, "-m", "pipeline", name, *args], project, env or clean_env(), check=False,
               timeout=timeout)


def outputs(project: Path) -> dict[str, str]:
    """Every file under the output folders, by SHA-256 (temporaries included, so a leftover shows)."""
    found = {}
    for folder in OUTPUT_DIRS:
        for path in sorted((project / folder).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(project))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def temporaries(project: Path) -> list[str]:
    return sorted(str(p.relative_to(project)) for folder in ("models", "reports", "data")
                  for p in (project / folder).rglob(".*") if p.name.endswith((".tmp", ".old")))


def run_statuses(project: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(project / "mlflow.db")) as con:
        return dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())


def registry(project: Path) -> tuple[list, list]:
    with contextlib.closing(sqlite3.connect(project / "mlflow.db")) as con:
        versions = con.execute("SELECT name, version FROM model_versions ORDER BY name, version").fetchall()
        aliases = con.execute("SELECT name, alias, version FROM registered_model_aliases").fetchall()
    return versions, aliases


def one_error_line(stderr: str, name: str) -> str:
    """The stage's stderr holds exactly one error line (and no traceback); returns it."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"{name}: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def assert_repro_completes(project: Path) -> None:
    result = run(["dvc", "repro"], project, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RUNNING" not in run_statuses(project)
    assert temporaries(project) == []


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def full_folder(folder: Path) -> Iterator[None]:
    """``folder`` on a tmpfs holding its current files and a filler that leaves about 4 KB free.

    A real full disk, for that folder only (root can mount here, as on CI). On
    leaving, the tmpfs is unmounted and the folder's own files show again.
    """
    saved = folder.parent / f"{folder.name}.saved"
    shutil.copytree(folder, saved, symlinks=True)
    size_kb = tree_bytes(saved) // 1024 + 1024
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], check=True)
    try:
        shutil.copytree(saved, folder, symlinks=True, dirs_exist_ok=True)
        filler = folder / ".filler"
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        size = filler.stat().st_size
        filler.unlink()
        filler.write_bytes(b"\0" * max(0, size - 4096))
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        shutil.rmtree(saved)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` (a file or a folder) on a read-only bind mount: read-only even for root, as on a
    read-only filesystem (a chmod does not stop root)."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


# ---- a full disk on each output folder ----------------------------------------------------------

@pytest.mark.parametrize("folder, name, args", [
    ("models", "train_scratch", ("--no-progress",)),
    ("reports/train", "train_concise", ("--no-progress",)),
    ("models", "train_baseline", ()),
    ("reports/eval", "evaluate", ()),
    ("reports/data", "preprocess", ()),
    ("reports", "report", ()),
    ("data", "preprocess", ()),
])
def test_full_disk_changes_no_output_and_leaves_no_run(built, folder, name, args):
    before, runs_before, registry_before = outputs(built), run_statuses(built), registry(built)
    with full_folder(built / folder):
        result = stage(built, name, *args)
        leftovers = temporaries(built)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr, name)
    assert f"cannot write {folder}" in line and ("No space left on device" in line or "free space" in line), line
    assert leftovers == []
    assert outputs(built) == before  # every output as it was: nothing new beside something old
    assert run_statuses(built) == runs_before  # the outputs are staged before a run starts
    assert registry(built) == registry_before
    assert_repro_completes(built)


def test_a_directory_in_the_place_of_an_output_changes_no_output(built):
    """A file output whose path is a directory (made by hand, by another tool) is refused before the first
    rename, in one line naming it: not the rename's error naming a temporary, after the outputs staged before
    it were already replaced."""
    preview = built / "reports/data/preview.png"
    preview.unlink()
    preview.mkdir()
    before = outputs(built)
    try:
        result = stage(built, "preprocess")
        assert result.returncode == 1, result.stderr
        line = one_error_line(result.stderr, "preprocess")
        assert line == "preprocess: error: cannot write reports/data/preview.png: a directory is in its place", line
        assert outputs(built) == before and temporaries(built) == []
        assert "RUNNING" not in run_statuses(built)
    finally:
        preview.rmdir()
    assert_repro_completes(built)


# ---- signals --------------------------------------------------------------------------------------

def slow_training(project: Path) -> None:
    set_param(project, "train.epochs", 400)


@pytest.mark.parametrize("signum, how", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated (SIGTERM)")])
def test_sigint_and_sigterm_mid_training_write_nothing(built, signum, how):
    slow_training(built)
    before, runs_before = outputs(built), run_statuses(built)
    training = Training(built)
    training.wait_for_epoch()  # 400 epochs take half a minute: the signal lands mid-training
    training.proc.send_signal(signum)
    stderr = training.finish()
    assert training.proc.returncode == 130, stderr
    assert f"train_scratch: {how}; no output was written" in stderr
    assert "Traceback" not in stderr
    assert outputs(built) == before and temporaries(built) == []
    assert run_statuses(built) == runs_before


def test_sigterm_while_logging_ends_the_run_killed(built):
    """A SIGTERM inside an MLflow run (here: while the model is logged) ends that run KILLED, not RUNNING."""
    env = clean_env(PYTHONPATH=str(built / "src"))
    # Signal the stage from inside, at the moment it logs the model: as a kill from outside would land.
    hook = built / "sitecustomize.py"
    hook.write_text(
        "import os, signal\n"
        "import softmax_regression.tracking.logged_models as m\n"
        "_log = m.log_model_file\n"
        "def log_model_file(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return _log(*a, **k)\n"
        "m.log_model_file = log_model_file\n"
    )
    env["PYTHONPATH"] = f"{built}{os.pathsep}{built / 'src'}"
    before = outputs(built)
    result = subprocess.run([sys.executable, "-m", "pipeline", "train_scratch", "--no-progress"],
                            cwd=built, env=env, capture_output=True, text=True, timeout=300)
    hook.unlink()
    assert result.returncode == 130, result.stderr
    assert "terminated (SIGTERM); no output was written" in result.stderr
    assert outputs(built) == before
    assert run_statuses(built).get("KILLED") == 1 and "RUNNING" not in run_statuses(built)


def test_sigkill_leaves_temporaries_that_the_next_run_removes(built):
    slow_training(built)
    dead = subprocess.Popen(["true"])
    dead.wait()
    # What a SIGKILL between writing and renaming leaves: temporaries named after a dead process.
    stale = [built / "models" / f".scratch.pt.{dead.pid}.x1y2z3.tmp",
             built / "reports" / f".report.{dead.pid}.a1b2c3.old"]
    stale[0].write_bytes(b"")
    stale[1].mkdir()
    (stale[1] / "report.html").write_text("old")
    training = Training(built)
    training.wait_for_epoch()
    training.proc.kill()
    training.finish()
    assert run_statuses(built).get("RUNNING") is None  # killed mid-training: no run was open
    set_param(built, "train.epochs", 2)
    result = stage(built, "train_scratch", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert not stale[0].exists()
    assert stale[1].exists()  # report's temporaries go when report writes again
    assert stage(built, "report").returncode == 0
    assert not stale[1].exists()
    assert_repro_completes(built)


# ---- the tracking store ---------------------------------------------------------------------------

def test_read_only_store_is_refused_before_any_work(built):
    before = outputs(built)
    db = built / "mlflow.db"
    with read_only(db):
        started = time.monotonic()
        result = stage(built, "train_scratch", "--no-progress")
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    line = one_error_line(result.stderr, "train_scratch")
    assert f"sqlite:///{db}" in line and "read-only" in line, line
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "epoch" not in result.stderr and elapsed < 30  # refused before the training
    assert outputs(built) == before
    assert_repro_completes(built)


def test_sqlite_uri_in_a_missing_folder_is_an_error_not_a_new_store(built, tmp_path):
    uri = f"sqlite:///{tmp_path}/nonexistent/dir/x.db"
    result = stage(built, "train_scratch", "--no-progress",
                   env=clean_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(built / "src")))
    assert result.returncode == 1
    line = one_error_line(result.stderr, "train_scratch")
    assert uri in line and "does not exist" in line, line
    assert not (tmp_path / "nonexistent").exists()


def test_corrupt_store_is_one_line_naming_it(built):
    before = outputs(built)
    (built / "mlflow.db").write_bytes(os.urandom(8192))
    result = stage(built, "evaluate")
    assert result.returncode == 1
    line = one_error_line(result.stderr, "evaluate")
    assert f"sqlite:///{built / 'mlflow.db'}" in line and "cannot be opened" in line, line
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert outputs(built) == before


LOCK_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")  # what a backup or a sqlite3 shell's long write holds
print("locked", flush=True)
sys.stdin.readline()  # held until the test lets go
connection.execute("ROLLBACK")
"""


def store_state(project: Path) -> tuple:
    """What a locked store must keep: every run with its status, and the champion."""
    with contextlib.closing(sqlite3.connect(project / "mlflow.db")) as con:
        return (sorted(con.execute("SELECT run_uuid, status FROM runs")),
                sorted(con.execute("SELECT name, alias, version FROM registered_model_aliases")))


@contextlib.contextmanager
def store_locked(project: Path) -> Iterator[None]:
    """Another process holds the project's store locked for the block."""
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(project / "mlflow.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.communicate("\n", timeout=30)


def test_a_store_locked_for_a_moment_is_waited_for_and_the_stage_succeeds(built):
    before = store_state(built)
    with store_locked(built):
        report = subprocess.Popen([sys.executable, "-m", "pipeline", "report"], cwd=built, env=clean_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        said = []
        for line in report.stderr:
            said.append(line)
            if "is locked by another process" in line:
                time.sleep(6)  # the stage waits past SQLite's own 5 s
                break
    said.append(report.stderr.read())
    assert report.wait(timeout=300) == 0, "".join(said)
    waiting = [line for line in "".join(said).splitlines() if "is locked by another process" in line]
    assert len(waiting) == 1 and "waiting for it, at most 60 s" in waiting[0], said
    assert store_state(built)[1] == before[1]  # the champion as it was


def test_a_store_locked_past_the_wait_is_one_line_to_retry_and_nothing_is_lost(built):
    before, files = store_state(built), outputs(built)
    with store_locked(built):
        result = stage(built, "evaluate", env=clean_env(FMNIST_STORE_BUSY_TIMEOUT="2",
                                                        PYTHONPATH=str(built / "src")))
    assert result.returncode == 1
    line = one_error_line(result.stderr, "evaluate")
    assert f"sqlite:///{built / 'mlflow.db'} is still locked by another process after 2 s" in line, line
    assert "retry" in line and "move" not in line
    assert store_state(built) == before and outputs(built) == files
    assert_repro_completes(built)


def test_unreachable_server_is_one_line_naming_it(built):
    from support import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    result = stage(built, "report", env=clean_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(built / "src")))
    assert result.returncode == 1
    assert uri in one_error_line(result.stderr, "report")


def test_a_folder_as_the_store_is_refused_naming_it_and_a_database_to_use(built, tmp_path):
    for uri in (f"file://{tmp_path}/runs", str(tmp_path / "runs")):
        result = stage(built, "evaluate", env=clean_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(built / "src")))
        assert result.returncode == 1
        line = one_error_line(result.stderr, "evaluate")
        assert f"MLflow store {uri} is a folder" in line and f"MLFLOW_TRACKING_URI=sqlite:///{tmp_path}/mlflow.db" in line
        assert "maintenance mode" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_deleted_experiment_is_one_line_saying_how_to_restore_it(built):
    with contextlib.closing(sqlite3.connect(built / "mlflow.db")) as con:
        con.execute("UPDATE experiments SET lifecycle_stage = 'deleted' WHERE name = 'fashion-mnist-softmax'")
        (experiment_id,) = con.execute("SELECT experiment_id FROM experiments WHERE name = 'fashion-mnist-softmax'"
                                       ).fetchone()
        con.commit()
    before = outputs(built)
    result = stage(built, "train_scratch", "--no-progress")
    assert result.returncode == 1
    line = one_error_line(result.stderr, "train_scratch")
    assert line == (f"train_scratch: error: MLflow store sqlite:///{built / 'mlflow.db'}: experiment 'fashion-mnist-softmax' "
                    f"(id {experiment_id}) is deleted; restore it (`mlflow experiments restore -x {experiment_id}`, or "
                    "in the UI) or set tracking.experiment to another name"), line
    assert "epoch" not in result.stderr and outputs(built) == before
    run(["mlflow", "experiments", "restore", "-x", str(experiment_id)], built,
        clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{built / 'mlflow.db'}"))
    assert_repro_completes(built)


def test_a_full_disk_under_the_artifact_store_is_one_line_naming_the_store(built):
    """MLflow's own failure (an OSError inside its artifact repository) as one line naming the store."""
    before, registry_before = outputs(built), registry(built)
    with full_folder(built / "mlruns"):
        result = stage(built, "evaluate")
    assert result.returncode == 1
    line = one_error_line(result.stderr, "evaluate")
    assert line.startswith(f"evaluate: error: MLflow store sqlite:///{built / 'mlflow.db'}: [Errno 28] No space "
                           "left on device"), line
    assert outputs(built) == before and registry(built) == registry_before
    assert "RUNNING" not in run_statuses(built)
    assert_repro_completes(built)


def test_a_lost_artifact_store_is_found_and_the_runs_and_champion_rebuilt(built):
    """`rm -rf mlruns` with mlflow.db kept: the registry points at nothing. Loading the champion names the
    version, its files and the way back; `dvc repro -f` of evaluate and report says what was missing and
    what it did (each model's run logged again from its model file, the champion registered again), and
    the champion loads again. The DVC outs do not change."""
    store.relocate_copied_store(f"sqlite:///{built / 'mlflow.db'}", built)  # as the copy's first stage would
    lock, before = (built / "dvc.lock").read_bytes(), outputs(built)
    (champion,) = [version for name, alias, version in registry(built)[1] if alias == "champion"]
    image = built / "item.png"
    Image.fromarray(np.load(built / "data/processed/test_images.npy")[0].reshape(28, 28)).save(image)
    predict = [str(Path(sys.executable).parent / "fmnist-predict"), "models:/fashion-mnist-softmax@champion",
               str(image)]
    assert run(predict, built).stdout.startswith(f"{image}: ")
    shutil.rmtree(built / "mlruns")

    lost = run(predict, built, check=False)
    assert lost.returncode == 1
    (line,) = lost.stderr.strip().splitlines()
    assert line.startswith(f"fmnist-predict: error: cannot load models:/fashion-mnist-softmax@champion: version "
                           f"{champion} of fashion-mnist-softmax lost its files (MLmodel, python_model.pkl, "
                           f"artifacts/model.pt missing from file://{built}/mlruns/"), line
    assert "run the project's evaluate stage again (forced" in line

    result = run(["dvc", "repro", "-f", "-s", "evaluate", "report"], built)
    said = result.stdout + result.stderr
    for kind in ("scratch", "concise", "baseline"):
        assert re.search(rf"evaluate: run \w+ of the {kind} model lost its files \(checkpoint/{kind}\.pt, "
                         rf"classifier/MLmodel, classifier/python_model\.pkl and 3 more missing from "
                         rf"file://{re.escape(str(built))}/mlruns/\S+\): created run \w+ from models/{kind}\.pt", said), said
    new = max(int(version) for name, alias, version in registry(built)[1] if alias == "champion")
    assert (f"evaluate: fashion-mnist-softmax version {champion} lost its files (MLmodel, python_model.pkl, "
            f"artifacts/model.pt missing from file://{built}/mlruns/") in said
    assert f"registered its model file again as version {new} and moved @champion to version {new}" in said, said
    assert "report: run" not in said  # report found the runs evaluate made
    assert run(predict, built).stdout.startswith(f"{image}: ")
    assert (built / "dvc.lock").read_bytes() == lock and outputs(built) == before
    assert list((built / "mlruns").rglob("report.html"))

    again = run(["dvc", "repro", "-f", "-s", "evaluate"], built)
    assert "lost its files" not in again.stdout + again.stderr  # said once, when found


def test_a_copied_project_keeps_its_runs_to_itself(fault_project, tmp_path):
    """``cp -a proj proj2``: proj2's runs, old and new, and their artifacts live in proj2 only."""
    original = fault_project[0]
    copy = tmp_path / "proj2"
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    original_artifacts = sorted(p for p in (original / "mlruns").rglob("*"))
    set_param(copy, "train.lr", 0.05)
    result = run(["dvc", "repro", "train_scratch"], copy)  # the case: a train stage in the copy
    assert "Running stage 'train_scratch'" in result.stdout
    assert sorted(p for p in (original / "mlruns").rglob("*")) == original_artifacts
    with contextlib.closing(sqlite3.connect(copy / "mlflow.db")) as con:
        uris = [u for (u,) in con.execute("SELECT artifact_uri FROM runs")]
        locations = [loc for (loc,) in con.execute("SELECT artifact_location FROM experiments")]
    assert uris and all(u.startswith((copy / "mlruns").as_uri() + "/") for u in uris), uris
    assert all(str(copy / "mlruns") in loc for loc in locations), locations
    assert any((copy / "mlruns").rglob("scratch.pt"))


def test_a_copied_project_whose_original_is_gone_predicts_from_its_own_store(fault_project, tmp_path):
    """``cp -a proj proj2; rm -rf proj``, then `fmnist-predict models:/...@champion` in proj2, before any stage ran
    there: it reads proj2's own store and artifacts."""
    original = tmp_path / "proj"
    subprocess.run(["cp", "-a", str(fault_project[0]), str(original)], check=True)
    # the original's own store, as its stages leave it: locations under proj/mlruns
    relocated = run([sys.executable, "-c", "import sys; from softmax_regression.tracking.store import "
                     "relocate_copied_store as r; r(f'sqlite:///{sys.argv[1]}/mlflow.db', sys.argv[1])",
                     str(original)], original)
    assert relocated.returncode == 0
    copy = tmp_path / "proj2"
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    shutil.rmtree(original)
    picture = tmp_path / "shoe.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(picture)
    result = run([str(Path(sys.executable).parent / "fmnist-predict"), "models:/fashion-mnist-softmax@champion",
                  str(picture)], copy)
    assert result.stdout.startswith(f"{picture}: "), result.stdout + result.stderr
    with contextlib.closing(sqlite3.connect(copy / "mlflow.db")) as con:
        sources = [source for (source,) in con.execute("SELECT source FROM model_versions")]
    assert sources and not [source for source in sources if str(original) + "/" in source], sources


# ---- a failed dvc repro says how to get the previous outputs back ---------------------------------

def test_failed_repro_names_dvc_checkout_and_checkout_restores(built):
    model = built / "models" / "scratch.pt"
    previous = model.read_bytes()
    set_param(built, "train.lr", 0.07)
    with read_only(built / "mlflow.db"):
        result = run(["dvc", "repro", "train_scratch"], built, check=False)
    assert result.returncode != 0
    assert "`dvc checkout train_scratch` restores its previous outputs" in result.stderr + result.stdout
    assert not model.exists()  # DVC removed the outs before running the stage, as the message says
    run(["dvc", "checkout", "train_scratch"], built)
    assert model.read_bytes() == previous
    set_param(built, "train.lr", 0.1)
    assert_repro_completes(built)


# ---- damaged outputs of an earlier stage: one line naming the file ---------------------------------

BEFORE_CALIBRATION = ("test_accuracy", "test_loss", "macro_f1", "val_accuracy")
"""All that evaluate wrote per model into reports/eval/metrics.json before it measured calibration."""
METRICS_BEFORE_CALIBRATION = json.dumps({kind: dict(zip(BEFORE_CALIBRATION, (0.8332, 0.4808, 0.8301, 0.8486)))
                                         for kind in ("scratch", "concise", "baseline")}, indent=4)


@pytest.mark.parametrize("path, content, name, args, fragment", [
    ("data/processed/meta.json", "", "train_scratch", ("--no-progress",), "is damaged"),
    ("data/processed/meta.json", '{"side": "x"}', "train_baseline", (), "is damaged"),
    ("reports/train/scratch_history.csv", "epoch,train_loss,train_acc,val_acc\n", "report", (), "holds no epoch"),
    ("reports/train/concise_history.csv", "epoch,train_loss\n1,2\n", "report", (), "is damaged"),
    ("reports/eval/metrics.json", "{not json", "report", (), "is damaged"),
    ("reports/eval/metrics.json", '{"concise": {"test_accuracy": 0.8, "val_accuracy": 0.8}}', "report", (),
     "is damaged (ValueError: no scores of scratch)"),
    ("reports/eval/metrics.json", '{"scratch": {}, "concise": {}}', "report", (),
     "is damaged (ValueError: scratch lacks test_accuracy, val_accuracy, temperature)"),
    # a workspace evaluated before calibration existed: the one key the report needs, and the way out
    ("reports/eval/metrics.json", METRICS_BEFORE_CALIBRATION, "report", (),
     "is damaged (ValueError: scratch lacks temperature); run the evaluate stage again"),
    ("data/processed/test_labels.npy", "not an array", "report", (), "is damaged"),
    ("data/processed/val_images.npy", "", "evaluate", (), "is damaged (No data left in file)"),
    ("reports/eval/per_class.csv", "model,class\nx", "report", (), "is damaged"),
    ("reports/eval/per_class.csv", "model,class,precision,recall,f1,support\n", "report", (),
     "is damaged (ValueError: no rows of scratch with one per class)"),
    # cut short, a reliability table gave the report's sentence another ECE than metrics.json's, silently
    ("reports/eval/reliability/scratch.csv", "bin_low,bin_high,count,confidence,accuracy,calibrated_count,"
     "calibrated_confidence,calibrated_accuracy\n0.000000,1.000000,5,0.9,0.8,5,0.9,0.8\n", "report", (),
     "is damaged (ValueError: its bins count 5 images before the temperature and 5 after, not the 10000 test images)"),
    ("reports/eval/worked.json", "{}", "report", (), "is damaged"),
])
def test_a_damaged_input_file_is_named(built, path, content, name, args, fragment):
    target = built / path
    target.unlink()  # DVC links outs from its cache: write a new file, not through the link
    target.write_text(content)
    before = outputs(built)
    result = stage(built, name, *args)
    assert result.returncode == 1
    line = one_error_line(result.stderr, name)
    assert path in line and fragment in line, line
    assert outputs(built) == before and temporaries(built) == []
    assert "RUNNING" not in run_statuses(built)


def test_a_pr_report_against_a_base_from_before_calibration_leaves_gaps(built):
    """`make pr-report BASE=<a revision before calibration>`: the base's metrics.json holds accuracies only.
    No stage of the head's code can rewrite a file of that revision, so the report does not call it damaged:
    it compares what both sides hold, each calibration cell of the base a gap, and runs the champion race on
    validation accuracy as ever."""
    from pipeline.ci.reproduce_check import dvc_cache

    metrics_path = "reports/eval/metrics.json"
    head_bytes = (built / metrics_path).read_bytes()
    head_scores = json.loads(head_bytes)
    base_bytes = json.dumps({kind: {key: values[key] for key in BEFORE_CALIBRATION}
                             for kind, values in head_scores.items()}, indent=4).encode()
    # the base: this commit but for evaluate's metrics file, as its dvc.lock records it and the DVC cache holds it
    head_md5, base_md5 = hashlib.md5(head_bytes).hexdigest(), hashlib.md5(base_bytes).hexdigest()
    cached = dvc_cache(built).directory / "files" / "md5" / base_md5[:2] / base_md5[2:]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(base_bytes)
    lock = (built / "dvc.lock").read_text()
    head_entry, base_entry = (f"md5: {head_md5}\n      size: {len(head_bytes)}\n",
                              f"md5: {base_md5}\n      size: {len(base_bytes)}\n")
    assert lock.count(head_entry) == 2, lock  # evaluate's out and report's dep
    (built / "dvc.lock").write_text(lock.replace(head_entry, base_entry))
    run(["git", "commit", "-qam", "evaluate before calibration"], built)
    (built / "dvc.lock").write_text(lock)
    run(["git", "commit", "-qam", "evaluate measures calibration"], built)

    result = run([sys.executable, "-m", "pipeline.ci.pr_report", "--base", "HEAD~1"], built, check=False)
    assert result.returncode == 0, result.stderr
    page = (built / "reports/pr/report.md").read_text()
    for kind, values in head_scores.items():
        accuracy, temperature = f"{values['val_accuracy']:.4f}", f"{values['temperature']:.4f}"
        assert f"| {kind} | val_accuracy | {accuracy} | {accuracy} | 0 |" in page, page
        assert f"| {kind} | temperature | - | {temperature} | - |" in page, page
        assert f"| {kind} | test_ece | - | {values['test_ece']:.4f} | - |" in page, page
    assert "the champion would stay the base's" in page


# ---- hostile model files, two writers --------------------------------------------------------------

def test_a_malicious_model_file_is_refused_without_running(tmp_path):
    """A .pt whose pickle would run a command: one line, and the command never ran."""
    import pickle
    import zipfile

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as archive:  # torch.save's layout: <name>/data.pkl
        archive.writestr("evil/data.pkl", pickle.dumps({"format": "softmax-regression-model/1", "x": Payload()}))
        archive.writestr("evil/version", "3\n")
    picture = tmp_path / "p.png"
    import numpy as np
    from PIL import Image
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(picture)
    result = run([str(Path(sys.executable).parent / "fmnist-predict"), str(evil), str(picture)], tmp_path,
                 check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and str(evil) in result.stderr, result.stderr
    assert "holds objects that could run code" in result.stderr and "not loaded" in result.stderr
    assert not marker.exists()


def catches_sigterm(group: int, command: str) -> bool:
    """A process of process group ``group`` running ``command`` has its SIGTERM handler in place: the signal's
    bit in its caught mask (``SigCgt`` of /proc/PID/status; none of the libraries a stage imports sets one)."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or os.getpgid(int(proc.name)) != group:
                continue
            if command not in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                continue
            caught = int((proc / "status").read_text().split("SigCgt:")[1].split()[0], 16)
        except (OSError, IndexError):
            continue
        if caught >> (signal.SIGTERM - 1) & 1:
            return True
    return False


def test_a_second_repro_is_refused_while_one_runs(built):
    slow_training(built)
    first = subprocess.Popen(["dvc", "repro"], cwd=built, env=clean_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = []
    try:
        for line in first.stdout:  # DVC holds its lock from here to the end
            output.append(line)
            if "Running stage 'train_scratch'" in line:
                break
        second = run(["dvc", "repro"], built, check=False)
        assert second.returncode != 0
        assert "lock" in (second.stdout + second.stderr).lower(), second.stdout + second.stderr
        deadline = time.monotonic() + 120
        while not catches_sigterm(first.pid, "pipeline train_scratch"):  # signalled before, it would just die
            assert first.poll() is None and time.monotonic() < deadline, "".join(output)
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGTERM)  # as a CI timeout stops a job
        rest, _ = first.communicate(timeout=120)
    output = "".join(output) + rest
    assert first.returncode != 0
    assert "terminated (SIGTERM); no output was written" in output, output
    assert "RUNNING" not in run_statuses(built) and temporaries(built) == []
    set_param(built, "train.epochs", 2)
    run(["dvc", "checkout"], built, check=False)
    assert_repro_completes(built)


def test_full_disk_while_fetching_keeps_the_previous_raw_files(built):
    """fetch replaces data/raw as a whole: a full data/ leaves what was there, one line naming data/raw."""
    raw = built / "data" / "raw"
    damaged = raw / "t10k-labels-idx1-ubyte"
    damaged.unlink()
    damaged.write_bytes(b"\0" * 16)  # unverified: fetch must fetch again, from the system copy
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    with full_folder(built / "data"):
        result = stage(built, "fetch", "--no-progress")
        leftovers = temporaries(built)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr, "fetch")
    assert "data/raw" in line and "No space left on device" in line, line
    assert leftovers == []
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == before
    assert_repro_completes(built)
