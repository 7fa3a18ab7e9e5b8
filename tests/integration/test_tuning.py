"""`make tune` for real: an Optuna study on two worker processes in a copy of the built project (real data), every
trial one MLflow run under the study's, Optuna and MLflow agreeing, the test split never opened, and the winner
trained again by `dvc exp run` to the same validation accuracy, bit for bit; a worker killed in mid-trial, whose
trial another worker runs again; an MLflow store that cannot be reached."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from conftest import fast_copy_of_build
from support import clean_env, free_port, run

EXPERIMENT = "fashion-mnist-softmax-tuning"
AUDIT = '''
import os, sys
if os.environ.get("AUDIT_LOG"):
    _log = os.open(os.environ["AUDIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # before the hook: not seen

    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            os.write(_log, (os.path.abspath(os.fsdecode(args[0])) + "\\n").encode())

    sys.addaudithook(_hook)
'''


@pytest.fixture
def project(tmp_path, fast_build):
    return fast_copy_of_build(fast_build, tmp_path / "project")[0]


def write_search(project: Path, **changes) -> Path:
    spec = {"study": "t", "experiment": EXPERIMENT, "trials": 4, "sampler": "random", "seed": 0, "pruner": "none",
            "fixed": {"train.epochs": 2},
            "space": {"train.lr": {"low": 0.02, "high": 0.5, "log": True},
                      "train.batch_size": {"choices": [128, 256]},
                      "train.schedule": {"choices": ["constant", "cosine"]}}}  # the baseline stays cached
    spec.update(changes)
    path = project / "search.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def tune(project: Path, *args: str, env: dict | None = None, check: bool = True, **kwargs):
    return run([sys.executable, "-m", "pipeline.tune", *args], project, env or clean_env(), check=check, **kwargs)


def load(project: Path, name: str = "t") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{project / 'optuna.db'}")


def tuning_runs(project: Path) -> tuple[mlflow.MlflowClient, list]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def final_val_acc(client, run_id: str) -> float:
    return max(client.get_metric_history(run_id, "val_acc"), key=lambda m: m.step).value


def test_two_workers_run_the_study_once_each_trial_in_mlflow_and_dvc_reproduces_the_winner_bit_for_bit(
        project, tmp_path):
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    (audit_dir / "sitecustomize.py").write_text(AUDIT)
    env = clean_env(PYTHONPATH=f"{project / 'src'}:{audit_dir}", AUDIT_LOG=str(tmp_path / "opened.txt"))
    write_search(project)
    output = tune(project, "run", "--search", "search.yaml", "--out", "tuned.yaml", "--workers", "2",
                  "--no-progress", env=env, timeout=900)

    study = load(project)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 4 and all(t.state.is_finished() for t in study.trials), study.trials
    # the two workers ran at once
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), spans

    client, runs = tuning_runs(project)
    parent = [r for r in runs if r.info.run_name == "study t"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(runs) == 1 + len(children)
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == sorted(t.number for t in trials)
    assert len({r.data.tags["worker"] for r in children}) == 2
    for t in trials:
        (r,) = [r for r in children if r.data.tags["optuna.trial"] == str(t.number)]
        assert r.info.run_name == f"trial {t.number} · t" and r.info.status == "FINISHED"
        assert r.data.tags["optuna.study"] == "t" and r.data.tags["optuna.state"] == "COMPLETE"
        assert r.data.tags["host"] == os.uname().nodename
        assert final_val_acc(client, r.info.run_id) == t.value
        assert {k: yaml.safe_load(r.data.params[k]) for k in t.params} == t.params
        assert int(r.data.params["train.epochs"]) == 2
        assert len(client.get_metric_history(r.info.run_id, "lr")) == 2
        assert 0 < r.data.metrics["training_seconds"] <= (r.info.end_time - r.info.start_time) / 1000
    best = max(trials, key=lambda t: (t.value, -t.number))
    assert parent[0].data.metrics["best_val_acc"] == best.value
    assert parent[0].data.tags["best_trial"] == str(best.number)

    # never the test split: the workers opened the training and validation splits, nothing of the test's
    opened = set((tmp_path / "opened.txt").read_text().splitlines())
    processed = project / "data" / "processed"
    assert {str(processed / f"{s}_{a}.npy") for s in ("train", "val") for a in ("images", "labels")} <= opened
    test_split = [project / "data/processed/test_images.npy", project / "data/processed/test_labels.npy",
                  *(project / "data/raw").glob("t10k*"), *(project / "reports/eval").glob("*")]
    assert len(test_split) > 4 and not opened & {str(p) for p in test_split}
    assert not [p for p in opened if Path(p).is_relative_to(project / "data")
                and "test" in Path(p).relative_to(project).as_posix()]

    # the winner, reproduced by DVC: the train stage's final validation accuracy is the trial's, bit for bit
    tuned_text = (project / "tuned.yaml").read_text()
    assert yaml.safe_load(tuned_text) == {"train.epochs": 2, **best.params}
    assert f"# trial {best.number}: validation accuracy {best.value!r}" in tuned_text
    assert "best validation accuracy" in output.stderr
    tune(project, "tuned", "--tuned", "tuned.yaml", timeout=900)
    history = (project / "reports/train/scratch_history.csv").read_text().splitlines()
    assert float(history[-1].split(",")[-1]) == best.value
    stage_runs = client.search_runs([client.get_experiment_by_name("fashion-mnist-softmax").experiment_id],
                                    filter_string="tags.dvc_exp_name = 'tuned' and tags.implementation = 'scratch'")
    assert [final_val_acc(client, r.info.run_id) for r in stage_runs] == [best.value]
    assert stage_runs[0].info.run_name == "scratch · tuned"


def test_a_worker_killed_in_mid_trial_has_its_trial_failed_and_run_again_by_another_counted_once(project):
    """A heartbeat every second (``heartbeat: 1``): the dead trial is failed after 4 s without one."""
    write_search(project, trials=2, fixed={"train.epochs": 16}, heartbeat=1)
    env = clean_env(PYTHONPATH=str(project / "src"))
    first = tune_worker(project, env)
    try:
        deadline = time.monotonic() + 300
        while not any(r.info.status == "RUNNING" and r.data.tags.get("optuna.trial") and "val_acc" in r.data.metrics
                      for r in tuning_runs_or_none(project)):  # in mid-trial: its first epoch is logged
            assert first.poll() is None and time.monotonic() < deadline, "the first worker never started a trial"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    killed = load(project).trials[0]
    assert killed.state == optuna.trial.TrialState.RUNNING  # nobody told Optuna: only its heartbeat stopped

    second = tune(project, "worker", "--search", "search.yaml", env=env, timeout=600)
    assert "trial 0 sent no heartbeat for 4 s" in second.stderr, second.stderr
    study = load(project)
    states = {t.number: t.state for t in study.trials}
    assert states == {0: optuna.trial.TrialState.FAIL, 1: optuna.trial.TrialState.COMPLETE,
                      2: optuna.trial.TrialState.COMPLETE}, states
    # the retry is trial 1 or 2: 1 where the dead trial was stale before this worker asked for its first trial
    (retried,) = [t for t in study.trials if "failed_trial" in t.system_attrs]
    assert retried.number in (1, 2) and retried.system_attrs["failed_trial"] == 0 and retried.params == killed.params

    client, runs = tuning_runs(project)
    by_trial = {}
    for r in runs:
        if "optuna.trial" in r.data.tags:
            by_trial.setdefault(int(r.data.tags["optuna.trial"]), []).append(r)
    assert {n: [(r.info.status, r.data.tags["optuna.state"]) for r in rs] for n, rs in by_trial.items()} == {
        0: [("FAILED", "FAIL")], 1: [("FINISHED", "COMPLETE")], 2: [("FINISHED", "COMPLETE")]}
    assert by_trial[0][0].data.tags["worker"] != by_trial[retried.number][0].data.tags["worker"]
    assert [r.info.status for r in runs if r.info.run_name == "study t"] == ["FINISHED"]


def test_a_worker_stopped_by_sigterm_in_mid_trial_says_so_in_one_line_its_trial_failed_its_run_killed(project):
    write_search(project, trials=2, fixed={"train.epochs": 40})
    env = clean_env(PYTHONPATH=str(project / "src"))
    worker = tune_worker(project, env, stderr=True)
    try:
        deadline = time.monotonic() + 300
        while not any(r.info.status == "RUNNING" and r.data.tags.get("optuna.trial") for r in tuning_runs_or_none(project)):
            assert worker.poll() is None and time.monotonic() < deadline, "the worker never started a trial"
            time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    stderr = worker.stderr.read()
    assert code == 130 and stderr.strip().splitlines()[-1].startswith("tune worker: terminated (SIGTERM)"), stderr
    assert "Traceback" not in stderr
    assert [t.state for t in load(project).trials] == [optuna.trial.TrialState.FAIL]
    _, runs = tuning_runs(project)
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("study t", "RUNNING"), ("trial 0 · t", "KILLED")]


def tune_worker(project: Path, env: dict, stderr: bool = False):
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "pipeline.tune", "worker", "--search", "search.yaml"], cwd=project,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
                            text=True)


def tuning_runs_or_none(project: Path) -> list:
    if not (project / "optuna.db").exists():
        return []
    try:
        return tuning_runs(project)[1]
    except Exception:  # the worker is still creating the experiment
        return []


def test_an_unreachable_mlflow_server_stops_a_worker_in_one_line_and_the_study_is_intact(project):
    write_search(project, trials=1)
    tune(project, "worker", "--search", "search.yaml", timeout=600)
    before = [(t.number, t.state, t.value) for t in load(project).trials]
    write_search(project, trials=2)  # one more trial, against a server that is not there
    env = clean_env(PYTHONPATH=str(project / "src"), MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    result = tune(project, "worker", "--search", "search.yaml", env=env, check=False, timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("tune worker: error:")]
    assert len(lines) == 1 and "127.0.0.1" in lines[0], result.stderr
    assert [(t.number, t.state, t.value) for t in load(project).trials] == before


def test_a_bad_search_file_is_one_line_naming_the_key(project):
    write_search(project, space={"train.lr": {"low": 0.5, "high": 0.1}})
    result = tune(project, "worker", "--search", "search.yaml", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith("space.train.lr needs numbers low < high (got 0.5, 0.1)")
    assert not (project / "optuna.db").exists()
