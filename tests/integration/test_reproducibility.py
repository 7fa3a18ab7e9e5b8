"""Reproducibility you can check in CI: no-op reruns, identical results in other places, selective
reruns, experiments (one, and a parallel queued sweep tracked in one SQLite store) and a DVC remote.
(The Optuna study of `make tune`: test_tuning.py.)

All of it runs the real pipeline on the real data, in temporary git copies of the
project. To stay within a few minutes they use a cheaper configuration of the
same pipeline (2 epochs, a 10-iteration baseline): every stage, every out and
every dependency edge is the same as with the defaults. The session's
`pipeline_project` (a real clone, default params) and `python -m
pipeline.ci.reproduce_check` (run by `make test`) cover the default configuration.
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

from support import (
    PROJECT_ROOT,
    clean_env,
    queued_experiment,
    run,
    set_param,
    stages_ran,
    stages_skipped,
    wait_for_queue,
)

STAGES = ["fetch", "preprocess", "train_scratch", "train_concise", "train_baseline", "evaluate", "report"]
STAGE_RESTORED = re.compile(r"Stage '([\w@.-]+)' is cached - skipping run, checking out outputs")
OUT_DIRS = ("data", "models", "reports")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_stages(project: Path) -> dict:
    return yaml.safe_load((project / "dvc.lock").read_text())["stages"]


def assert_up_to_date(project: Path) -> None:
    assert run(["dvc", "status", "--json"], project).stdout.strip() == "{}"


def restore_params(project: Path) -> str:
    """Put params.yaml back and `dvc repro`; returns DVC's output."""
    run(["git", "checkout", "params.yaml"], project)
    return run(["dvc", "repro"], project).stdout


def assert_restored_from_run_cache(project: Path, repro_output: str, lock_before: dict) -> None:
    """Putting the params back brought the earlier results back from the run cache, running nothing."""
    assert stages_ran(repro_output) == [], repro_output
    assert lock_stages(project) == lock_before
    assert_up_to_date(project)


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
# (tests/integration/test_train_pipeline.py), and `make reproduce-check` rebuilds a clean clone the same way.

# --- 3. a change reruns exactly what depends on it ------------------------------------------------

SELECTIVE = [
    ("data.seed", 1, ["preprocess", "train_scratch", "train_concise", "train_baseline", "evaluate", "report"]),
    ("train.lr", 0.05, ["train_scratch", "train_concise", "evaluate", "report"]),
    ("baseline.C", 0.5, ["train_baseline", "evaluate", "report"]),
    ("evaluate.baseline", False, ["evaluate", "report"]),
    ("report.n_images", 9, ["report"]),
    # where the data comes from is not a param DVC tracks: a teammate's own copy reruns nothing
    ("data.local_dir", "/srv/alice/fashion-mnist", []),
    ("data.mirrors", ["http://127.0.0.1:9/"], []),
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
        restore = restore_params(project)
    assert_restored_from_run_cache(project, restore, lock_before)


# --- 3b. an edit to the code reruns what docs/pipeline.md says ---------------------------------------

EDIT_EACH = r"""
import json, sys
from pathlib import Path

from dvc.repo import Repo

root, modules = Path(sys.argv[1]), json.loads(sys.argv[2])
marked = {}
for module in modules:
    path = root / module
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit\n")
    try:
        with Repo(str(root)) as repo:
            marked[module] = sorted(name.rpartition(":")[2] for name in repo.status())
    finally:
        path.write_bytes(original)
print(json.dumps(marked))
"""


def edit_table() -> list[tuple[list[str], list[str], list[str]]]:
    """The rows of docs/pipeline.md's table of what an edit to the code reruns: (modules, the stages
    ``dvc status`` marks, the stages after them)."""
    text = (PROJECT_ROOT / "docs" / "pipeline.md").read_text()
    section = text.split("## What an edit to the code reruns", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows.append(tuple(re.findall(r"`([^`]+)`", cell) for cell in cells))
    return rows


def downstream(stages: list[str]) -> list[str]:
    """The stages of dvc.yaml that read, at any remove, what ``stages`` write."""
    spec = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]

    def outs(stage: dict) -> set[str]:
        return {o if isinstance(o, str) else next(iter(o)) for kind in ("outs", "metrics", "plots")
                for o in stage.get(kind, [])}

    found, todo = set(), list(stages)
    while todo:
        written = outs(spec[todo.pop()])
        for name, stage in spec.items():
            if name not in found and name not in stages and written & set(stage.get("deps", [])):
                found.add(name)
                todo.append(name)
    return [name for name in spec if name in found]


def test_an_edit_to_each_module_reruns_the_stages_docs_pipeline_md_names(fast_project):
    """Every module of the project is in the table once; an edit to it marks exactly the stages its row names
    (DVC's own ``status``, one module at a time, on a built project), and the row's last column is what reads
    their outputs. The stages' deps are the real imports (test_dvc_graph.py), so this is the table's check."""
    project, _ = fast_project
    rows = edit_table()
    documented = [module for modules, _, _ in rows for module in modules]
    every = sorted(p.relative_to(PROJECT_ROOT).as_posix() for folder in ("pipeline", "src/softmax_regression")
                   for p in (PROJECT_ROOT / folder).rglob("*.py"))
    assert sorted(documented) == every, "docs/pipeline.md's table names every module of the project, once"
    assert_up_to_date(project)
    marked = json.loads(run([sys.executable, "-c", EDIT_EACH, str(project), json.dumps(documented)], project).stdout)
    for modules, marks, then in rows:
        for module in modules:
            assert marked[module] == sorted(marks), f"an edit to {module} marks {marked[module]}, the table {marks}"
        assert then == downstream(marks), f"after {marks}: {downstream(marks)}, the table {then}"
    assert_up_to_date(project)
    # the cases, in words
    row = {module: (marks, then) for modules, marks, then in rows for module in modules}
    assert row["src/softmax_regression/reporting/page_figures.py"] == (["report"], [])
    assert set(row["src/softmax_regression/models/concise.py"][0]) == {"train_concise"}
    for module in ("src/softmax_regression/training/loop.py", "src/softmax_regression/data/batches.py",
                   "src/softmax_regression/training/history.py"):
        assert not {"fetch", "preprocess", "train_baseline"} & set(row[module][0]), module
    assert not {"fetch", "preprocess"} & set(row["src/softmax_regression/models/losses.py"][0])


LATEST_LR = """
import json, mlflow
client = mlflow.MlflowClient("sqlite:///mlflow.db")
experiment = client.get_experiment_by_name("fashion-mnist-softmax")
run = client.search_runs([experiment.experiment_id], "attributes.run_name = 'scratch'",
                         order_by=["attributes.start_time DESC"], max_results=1)[0]
print(json.dumps([m.value for m in sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)]))
"""


def test_standardized_inputs_and_a_schedule_run_end_to_end_on_the_real_data(fast_project):
    """data.normalize=per_pixel with train.schedule=cosine: the stages that read them rerun, the
    statistics in the model file are the training split's alone, every epoch's learning rate is in
    MLflow, and fmnist-predict on the real test file scores exactly what evaluate scored."""
    import numpy as np

    from softmax_regression.models.file import load_model
    from softmax_regression.training.loop import learning_rates

    project, _ = fast_project
    assert_up_to_date(project)
    lock_before = lock_stages(project)
    set_param(project, "data.normalize", "per_pixel")
    set_param(project, "train.schedule", "cosine")
    try:
        output = run(["dvc", "repro"], project).stdout
        assert sorted(stages_ran(output)) == sorted(
            ["train_scratch", "train_concise", "train_baseline", "evaluate", "report"]), output

        train_images = np.load(project / "data/processed/train_images.npy").reshape(55000, -1) / 255
        every_image = np.concatenate([train_images, np.load(project / "data/processed/val_images.npy")
                                      .reshape(5000, -1) / 255])
        for kind in ("scratch", "concise", "baseline"):
            loaded = load_model(project / f"models/{kind}.pt")
            assert loaded.standardization.mode == "per_pixel"
            assert loaded.params["data.normalize"] == "per_pixel"
            np.testing.assert_allclose(loaded.standardization.mean.numpy(), train_images.mean(axis=0), atol=1e-6)
            assert not np.allclose(loaded.standardization.mean.numpy(), every_image.mean(axis=0), atol=1e-6)
        assert load_model(project / "models/scratch.pt").params["train.schedule"] == "cosine"

        epochs = yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"]
        # In another process: a client here would keep the store's file open (MLflow caches its engine by
        # URI), and a later test that moves mlflow.db aside would go on reading the old file.
        logged = json.loads(run([sys.executable, "-c", LATEST_LR], project).stdout)
        np.testing.assert_allclose(logged, learning_rates(0.1, epochs, "cosine"))

        metrics = json.loads((project / "reports/eval/metrics.json").read_text())
        predicted = json.loads(run(["fmnist-predict", "models/scratch.pt", "data/raw/t10k-images-idx3-ubyte",
                                    "--json", "--top", "1"], project).stdout)
        labels = np.load(project / "data/processed/test_labels.npy")
        classes = load_model(project / "models/scratch.pt").class_names
        hits = [item["top"][0]["class"] == classes[label] for item, label in zip(predicted, labels)]
        assert len(hits) == 10000 and round(float(np.mean(hits)), 4) == metrics["scratch"]["test_accuracy"]
    finally:
        restore = restore_params(project)
    assert_restored_from_run_cache(project, restore, lock_before)


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


SWEEP_LR = (0.05, 0.2)
SWEEP_WEIGHT_DECAY = 0.0001  # none of these is in the run cache: every experiment trains
SWEEP_EPOCHS = 1  # the machinery is the point (two queue workers, one store), not the models


def test_a_queued_two_worker_sweep_lands_every_run_in_the_projects_store(fast_project):
    """docs/tuning.md's DVC sweep (`dvc exp run --queue`, `dvc queue start -j 2`): every experiment in DVC and in
    the project's MLflow store (created by the two workers between them, as in a fresh clone), each run named by
    its model and experiment and spanning its training. (`make tuned` reproducing a point: test_tuning.py.)"""
    import mlflow

    project, _ = fast_project
    assert_up_to_date(project)
    # As in a fresh clone (mlflow.db is git-ignored): the two workers create the store between them.
    (project / "mlflow.db").rename(project / "mlflow.db.before-sweep")
    try:
        names = [queued_experiment(project, [f"train.lr={lr}", f"train.weight_decay={SWEEP_WEIGHT_DECAY}",
                                             f"train.epochs={SWEEP_EPOCHS}", "evaluate.baseline=false"])
                 for lr in SWEEP_LR]
        run(["dvc", "queue", "start", "-j", "2"], project)
        status = wait_for_queue(project, names)
    finally:
        run(["dvc", "queue", "stop"], project, check=False)
    assert status == {name: "Success" for name in names}, status
    shown = {name: experiment for name, experiment in exp_show(project).items() if name in names}
    assert sorted(shown[n]["params"]["train"]["lr"] for n in shown) == sorted(SWEEP_LR)
    assert all(set(experiment["metrics"]) == {"scratch", "concise"} for experiment in shown.values())

    # The runs went to the ORIGINAL project's store, not to the temporary copies DVC ran them in.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fashion-mnist-softmax")
    every_run = client.search_runs([experiment.experiment_id], max_results=1000)
    assert sorted(r.data.tags.get("dvc_exp_name", "") for r in every_run) == sorted(names * 2)
    spans = {}
    for name, shown_experiment in shown.items():
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.dvc_exp_name = '{name}'")
        assert sorted(r.info.run_name for r in runs) == [f"concise · {name}", f"scratch · {name}"]
        for r in runs:
            kind = r.data.tags["implementation"]
            assert r.info.status == "FINISHED"
            assert float(r.data.params["train.lr"]) == shown_experiment["params"]["train"]["lr"]
            assert r.data.tags["dvc_stage"] == f"train_{kind}"
            assert "test_accuracy" in r.data.metrics  # evaluate logged into the same run
            # the run spans the training it records, and no more: evaluate's later logging kept its end
            assert 0 < r.data.metrics["training_seconds"] <= (r.info.end_time - r.info.start_time) / 1000 < 60
            artifacts = Path(r.info.artifact_uri.removeprefix("file://")).resolve()
            assert artifacts.is_relative_to((project / "mlruns").resolve()), artifacts
            assert (artifacts / "checkpoint" / f"{kind}.pt").is_file()
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
from pathlib import Path

import mlflow
from softmax_regression.tracking import store

project, worker = Path(sys.argv[1]), sys.argv[2]
(project / f"{worker}.ready").touch()
while not (project / "go").exists():
    time.sleep(0.001)
store.configure(project)
experiment_id = store.experiment_id("fashion-mnist-softmax", project)
with mlflow.start_run(experiment_id=experiment_id, run_name=worker):
    for step in range(20):
        mlflow.log_metrics({"train_loss": 1 / (step + 1), "val_acc": step / 20}, step=step)
"""


def test_simultaneous_first_use_of_a_fresh_store_loses_nothing(tmp_path):
    """Four stages starting at the same instant on a store that does not exist yet (the schema race)."""
    import mlflow

    names = [f"w{i}" for i in range(4)]
    workers = [subprocess.Popen([sys.executable, "-c", FIRST_USE, str(tmp_path), name],
                                cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for name in names]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"{name}.ready").exists() for name in names):  # every one has imported mlflow
        assert all(w.poll() is None for w in workers) and time.monotonic() < deadline, "a worker never got ready"
        time.sleep(0.01)
    (tmp_path / "go").touch()
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
