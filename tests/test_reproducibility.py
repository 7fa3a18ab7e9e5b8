"""Reproducibility you can check in CI: no-op reruns, identical results in other places, selective
reruns, experiments (one, and a parallel queued sweep tracked in one SQLite store) and a DVC remote.

All of it runs the real pipeline on the real data, in temporary git copies of the
project. To stay within a few minutes they use a cheaper configuration of the
same pipeline (2 epochs, a 10-iteration baseline): every stage, every out and
every dependency edge is the same as with the defaults. The session's
`pipeline_project` (a real clone, default params) and `python -m
pipeline.reproduce_check` (run by `make test`) cover the default configuration.
"""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support import clean_env, run, set_param, stages_ran, stages_skipped

pytestmark = pytest.mark.slow

STAGES = ["fetch", "preprocess", "train_scratch", "train_concise", "train_baseline", "evaluate", "report"]
STAGE_RESTORED = re.compile(r"Stage '([\w@.-]+)' is cached - skipping run, checking out outputs")
OUT_DIRS = ("data", "models", "reports")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_stages(project: Path) -> dict:
    return yaml.safe_load((project / "dvc.lock").read_text())["stages"]


def assert_up_to_date(project: Path) -> None:
    assert run(["dvc", "status", "--json"], project).stdout.strip() == "{}"


def out_digests(project: Path) -> dict[str, str]:
    return {p.relative_to(project).as_posix(): sha256(p)
            for d in OUT_DIRS for p in sorted((project / d).rglob("*")) if p.is_file()}


# --- 1. a second `dvc repro` does nothing ---------------------------------------------------------

def test_second_repro_skips_every_stage_and_status_is_clean(fast_project):
    project, first_output = fast_project
    assert stages_ran(first_output) == STAGES
    lock_before = (project / "dvc.lock").read_bytes()

    second = run(["dvc", "repro"], project)
    assert stages_skipped(second.stdout) == STAGES
    assert stages_ran(second.stdout) == [] and STAGE_RESTORED.findall(second.stdout) == []
    assert (project / "dvc.lock").read_bytes() == lock_before
    assert "Data and pipelines are up to date." in run(["dvc", "status"], project).stdout
    assert_up_to_date(project)
    assert run(["git", "status", "--porcelain"], project).stdout == ""


# --- 2. the same results in another place: the session's `pipeline_project` is a real clone in a
# temporary directory whose dvc.lock (every out's hash) must equal the committed one, made elsewhere
# (tests/test_train_pipeline.py), and `make reproduce-check` rebuilds a clean clone the same way.

# --- 3. a change reruns exactly what depends on it ------------------------------------------------

SELECTIVE = [
    ("data.seed", 1, ["preprocess", "train_scratch", "train_concise", "train_baseline", "evaluate", "report"]),
    ("train.lr", 0.05, ["train_scratch", "train_concise", "evaluate", "report"]),
    ("baseline.C", 0.5, ["train_baseline", "evaluate", "report"]),
    ("evaluate.baseline", False, ["evaluate", "report"]),
    ("report.n_images", 9, ["report"]),
]


@pytest.mark.parametrize("key, value, dependents", SELECTIVE, ids=[case[0] for case in SELECTIVE])
def test_changing_one_param_reruns_exactly_its_dependent_stages(fast_project, key, value, dependents):
    project, _ = fast_project
    assert_up_to_date(project)
    lock_before = lock_stages(project)
    set_param(project, key, value)
    try:
        output = run(["dvc", "repro"], project).stdout
        # DVC's own account: a stage either ran (or came back from the run cache) or was skipped
        reproduced = stages_ran(output) + STAGE_RESTORED.findall(output)
        assert sorted(reproduced) == sorted(dependents), output
        assert stages_skipped(output) == [s for s in STAGES if s not in dependents], output
        # and the lock file: exactly the dependent stages' entries changed
        lock_after = lock_stages(project)
        assert list(lock_after) == STAGES
        assert [s for s in STAGES if lock_after[s] != lock_before[s]] == dependents
    finally:
        run(["git", "checkout", "params.yaml"], project)
        restore = run(["dvc", "repro"], project).stdout
    # putting the param back restores the earlier results from the run cache, without running anything
    assert stages_ran(restore) == [], restore
    assert lock_stages(project) == lock_before
    assert_up_to_date(project)


# --- 4. experiments -------------------------------------------------------------------------------

def exp_show(project: Path) -> dict[str, dict]:
    """Every experiment `dvc exp show --json` lists, by name: its params.yaml and metrics."""
    found = {}
    for baseline in json.loads(run(["dvc", "exp", "show", "--json"], project).stdout):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                data = rev.get("data") or {}
                found[rev["name"]] = {"params": data.get("params", {}).get("params.yaml", {}).get("data", {}),
                                      "metrics": data.get("metrics", {}).get("reports/eval/metrics.json", {})
                                      .get("data", {}),
                                      "error": rev.get("error")}
    return found


def restore_workspace(project: Path) -> None:
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], project)
    run(["dvc", "checkout", "--force"], project)
    assert_up_to_date(project)


def test_exp_run_with_a_changed_param(fast_project):
    project, _ = fast_project
    assert_up_to_date(project)
    try:
        result = run(["dvc", "exp", "run", "-S", "train.lr=0.05"], project)
        name = re.search(r"Ran experiment\(s\): ([\w-]+)", result.stdout).group(1)
        assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.05  # applied
        experiment = exp_show(project)[name]
        assert experiment["error"] is None
        assert experiment["params"]["train"]["lr"] == 0.05
        assert set(experiment["metrics"]) == {"scratch", "concise", "baseline"}
        assert 0.5 < experiment["metrics"]["scratch"]["test_accuracy"] < 1
    finally:
        restore_workspace(project)


SWEEP_LR = (0.05, 0.1, 0.2)
SWEEP_WEIGHT_DECAY = (0.0001,)  # none of these is in the run cache: every experiment trains


def wait_for_queue(project: Path, timeout: float) -> dict[str, str]:
    """Poll `dvc queue status` until nothing is queued or running; returns the status of each task by name."""
    deadline = time.monotonic() + timeout
    while True:
        table = run(["dvc", "queue", "status"], project).stdout
        status = {}
        for line in table.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 5 and re.fullmatch(r"[0-9a-f]{7}", fields[0]):
                status[fields[1]] = fields[-1]
        if not {"Queued", "Running"} & set(status.values()):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"queue still busy after {timeout:.0f} s:\n{table}")
        time.sleep(5)


def test_parallel_sweep_lands_every_experiment_in_dvc_and_in_the_projects_mlflow_store(fast_project):
    import mlflow

    project, _ = fast_project
    assert_up_to_date(project)
    # As in a fresh clone (mlflow.db is git-ignored): the two workers create the store between them.
    (project / "mlflow.db").rename(project / "mlflow.db.before-sweep")
    grid = {}
    for lr in SWEEP_LR:
        for weight_decay in SWEEP_WEIGHT_DECAY:
            result = run(["dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}", "-S", f"train.weight_decay={weight_decay}",
                          "-S", "train.epochs=2", "-S", "evaluate.baseline=false"], project)
            grid[re.search(r"Queued experiment '([\w-]+)'", result.stdout).group(1)] = (lr, weight_decay)
    assert len(grid) == len(SWEEP_LR) * len(SWEEP_WEIGHT_DECAY)
    try:
        run(["dvc", "queue", "start", "-j", "2"], project)
        status = wait_for_queue(project, timeout=1500)
    finally:
        run(["dvc", "queue", "stop"], project, check=False)
    failed = {name: s for name, s in status.items() if name in grid and s != "Success"}
    assert not failed, {name: run(["dvc", "queue", "logs", name], project, check=False).stdout[-3000:]
                        for name in failed}
    assert set(grid) <= set(status)

    shown = exp_show(project)
    for name, (lr, weight_decay) in grid.items():
        assert name in shown, f"{name} missing from dvc exp show"
        assert shown[name]["error"] is None
        train = shown[name]["params"]["train"]
        assert (train["lr"], train["weight_decay"], train["epochs"]) == (lr, weight_decay, 2)
        assert set(shown[name]["metrics"]) == {"scratch", "concise"}

    # The runs went to the ORIGINAL project's store, not to the temporary copies DVC ran them in.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fashion-mnist-softmax")
    every_run = client.search_runs([experiment.experiment_id], max_results=1000)
    assert sorted(r.data.tags.get("dvc_exp_name", "") for r in every_run) == sorted(list(grid) * 2)
    spans = {}
    for name, (lr, weight_decay) in grid.items():
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.dvc_exp_name = '{name}'")
        assert sorted(r.info.run_name for r in runs) == ["concise", "scratch"], name
        for r in runs:
            assert r.info.status == "FINISHED"
            assert (float(r.data.params["train.lr"]), float(r.data.params["train.weight_decay"])) == (lr, weight_decay)
            assert r.data.tags["dvc_stage"] == f"train_{r.info.run_name}"
            assert "test_accuracy" in r.data.metrics  # evaluate logged into the same run
            artifacts = Path(r.info.artifact_uri.removeprefix("file://")).resolve()
            assert artifacts.is_relative_to((project / "mlruns").resolve()), artifacts
            assert (artifacts / "checkpoint" / f"{r.info.run_name}.pt").is_file()
        spans[name] = (min(r.info.start_time for r in runs), max(r.info.end_time for r in runs))
    # two workers really ran at once (otherwise the store was never written to concurrently)
    ordered = sorted(spans.values())
    assert any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:])), spans


# --- 5. a DVC remote brings everything back -------------------------------------------------------

def test_push_then_pull_into_an_empty_cache_needs_no_rerun(fast_project, tmp_path):
    project, _ = fast_project
    assert_up_to_date(project)
    remote = tmp_path / "dvc-remote"
    before = out_digests(project)
    assert any(rel.startswith("models/") for rel in before) and "reports/eval/metrics.json" in before
    run(["dvc", "remote", "add", "-d", "local", str(remote)], project)
    try:
        run(["dvc", "push"], project)
        assert any(p.is_file() for p in remote.rglob("*"))
        shutil.rmtree(project / ".dvc" / "cache")
        for name in OUT_DIRS:
            shutil.rmtree(project / name)
        assert "deleted" in run(["dvc", "status"], project).stdout

        run(["dvc", "pull"], project)
        assert out_digests(project) == before
        output = run(["dvc", "repro"], project).stdout
        assert stages_skipped(output) == STAGES
        assert stages_ran(output) == [] and STAGE_RESTORED.findall(output) == []
        assert_up_to_date(project)
    finally:
        run(["git", "checkout", "--", ".dvc/config"], project)


FIRST_USE = """
import sys, time
import mlflow
from softmax_regression import tracking

project, start, worker = sys.argv[1], float(sys.argv[2]), sys.argv[3]
while time.time() < start:
    time.sleep(0.001)
tracking.configure(project)
experiment_id = tracking.experiment_id("fashion-mnist-softmax", project)
with mlflow.start_run(experiment_id=experiment_id, run_name=worker):
    for step in range(20):
        mlflow.log_metrics({"train_loss": 1 / (step + 1), "val_acc": step / 20}, step=step)
"""


def test_simultaneous_first_use_of_a_fresh_store_loses_nothing(tmp_path):
    """Four stages starting at the same instant on a store that does not exist yet (the schema race)."""
    import mlflow

    start = time.time() + 8  # after every process has imported mlflow
    workers = [subprocess.Popen([sys.executable, "-c", FIRST_USE, str(tmp_path), str(start), f"w{i}"],
                                cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for i in range(4)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], "\n---\n".join(outputs)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiments = [e for e in client.search_experiments() if e.name == "fashion-mnist-softmax"]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["w0", "w1", "w2", "w3"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert len(client.get_metric_history(r.info.run_id, "train_loss")) == 20
