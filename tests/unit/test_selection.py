"""Choosing the tuned model: the sweep file, the runs it finds in a real MLflow store, the winner on the
validation split, and proof that the selection never reads the test split."""

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from pipeline.tune import REPRODUCE, set_param_flags
from softmax_regression.params import flatten_params, load_params
from softmax_regression.selection import (
    SweepError,
    best,
    candidates_from_runs,
    load_sweep,
    load_tuned,
    point_params,
    tuned_yaml,
)
from support import PROJECT_ROOT, clean_env, tracking_store

BASE = load_params(PROJECT_ROOT / "params.yaml")
"""The project's params, which a sweep point overrides."""

SWEEP = {
    "fixed": {"train.epochs": 30, "train.schedule": "cosine", "evaluate.baseline": False},
    "grid": {"train.lr": [0.03, 0.1], "train.weight_decay": [0.0, 0.001], "data.normalize": ["per_pixel"]},
}
# Validation and test accuracy of the scratch run of each (lr, weight_decay): the test split would pick
# another point than the validation split does.
SCORES = {(0.03, 0.0): (0.850, 0.849), (0.03, 0.001): (0.856, 0.841),
          (0.1, 0.0): (0.853, 0.852), (0.1, 0.001): (0.851, 0.860)}
VAL_BEST, TEST_BEST = (0.03, 0.001), (0.1, 0.001)


def write_sweep(path: Path, spec: dict = SWEEP) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_the_grid_is_every_combination_with_the_fixed_values(tmp_path):
    fixed, points = load_sweep(write_sweep(tmp_path / "sweep.yaml"), BASE)
    assert fixed == SWEEP["fixed"]
    assert [(p["train.lr"], p["train.weight_decay"]) for p in points] == [(0.03, 0.0), (0.03, 0.001),
                                                                         (0.1, 0.0), (0.1, 0.001)]
    assert all(p["train.epochs"] == 30 and p["data.normalize"] == "per_pixel" for p in points)


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"train.lr": [0.1, -1]}}, "params key train.lr is -1; expected a number > 0"),
    ({"grid": {"train.speed": [1]}}, "unknown params key train.speed"),
    ({"grid": {"evaluate.baseline": [True, False]}}, "grid key evaluate.baseline is not one a training run records"),
    ({"grid": {"train.lr": []}}, "grid key train.lr must list at least one value"),
    ({"fixed": {"train.lr": 0.1}}, "must hold a `grid` mapping"),
    ({"grid": {"lr": [0.1]}}, "must map dotted params keys"),
    ({"grid": {"data.normalize": ["zscore"]}}, "params key data.normalize is 'zscore'; expected one of none, global"),
])
def test_a_bad_sweep_file_is_one_line_naming_what_is_wrong(tmp_path, spec, message):
    with pytest.raises(SweepError) as info:
        load_sweep(write_sweep(tmp_path / "sweep.yaml", spec), BASE)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_sweep_file_is_named(tmp_path):
    with pytest.raises(SweepError, match="sweep file .*nowhere.yaml not found"):
        load_sweep(tmp_path / "nowhere.yaml", BASE)


def logged_params(point: dict) -> dict:
    """What a train stage logs for a point: every train.* param and data.normalize (defaults for the rest)."""
    params = point_params(point, BASE)
    return {**flatten_params(params, ("train",)), "data.normalize": params["data"]["normalize"]}


DATASET = "d" * 64  # the dataset_sha256 tag of the runs below


def log_runs(experiment: str = "fashion-mnist-softmax") -> dict[tuple, str]:
    """Training runs as the pipeline logs them, with evaluate's test metrics in the same runs, plus runs
    the selection must pass over: concise ones, a failed one, and one of a point outside the grid."""
    experiment_id = mlflow.create_experiment(experiment)
    ids = {}
    for (lr, wd), (val, test) in SCORES.items():
        for name, shift in (("scratch", 0.0), ("concise", 0.05)):
            with mlflow.start_run(experiment_id=experiment_id, run_name=name,
                                  tags={"dataset_sha256": DATASET}) as run:
                mlflow.log_params(logged_params({"train.lr": lr, "train.weight_decay": wd, "train.epochs": 30,
                                                 "train.schedule": "cosine", "data.normalize": "per_pixel"}))
                for step, value in enumerate((0.7, 0.8, val + shift), start=1):
                    mlflow.log_metric("val_acc", value, step=step)
                mlflow.log_metrics({"test_accuracy": test, "val_accuracy": val})
            if name == "scratch":
                ids[(lr, wd)] = run.info.run_id
    # a failed run of a point with a better validation accuracy than any
    with mlflow.start_run(experiment_id=experiment_id, run_name="scratch", tags={"dataset_sha256": DATASET}) as run:
        mlflow.log_params(logged_params({"train.lr": 0.03, "train.weight_decay": 0.0, "train.epochs": 30,
                                         "train.schedule": "cosine", "data.normalize": "per_pixel"}))
        mlflow.log_metric("val_acc", 0.99, step=30)
    mlflow.MlflowClient().set_terminated(run.info.run_id, "FAILED")
    # a run of another epoch count (not a point of this sweep)
    with mlflow.start_run(experiment_id=experiment_id, run_name="scratch", tags={"dataset_sha256": DATASET}):
        mlflow.log_params(logged_params({"train.lr": 0.1, "train.weight_decay": 0.0, "train.epochs": 10,
                                         "train.schedule": "cosine", "data.normalize": "per_pixel"}))
        mlflow.log_metric("val_acc", 0.98, step=10)
    # later runs of points of the grid that the sweep did not train: the point's own keys match, not the
    # rest (another batch size), or not the data (another validation split)
    for changed, tags in (({"train.batch_size": 64}, {"dataset_sha256": DATASET}), ({}, {"dataset_sha256": "e" * 64})):
        with mlflow.start_run(experiment_id=experiment_id, run_name="scratch", tags=tags):
            mlflow.log_params(logged_params({"train.lr": 0.1, "train.weight_decay": 0.001, "train.epochs": 30,
                                             "train.schedule": "cosine", "data.normalize": "per_pixel", **changed}))
            mlflow.log_metric("val_acc", 0.97, step=30)
    return ids


@pytest.fixture(scope="module")
def logged_store_file(tmp_path_factory, empty_store_file) -> tuple[Path, dict[tuple, str]]:
    """An ``mlflow.db`` holding the runs of :func:`log_runs`, and the ids of the scratch runs of the grid."""
    root = tmp_path_factory.mktemp("logged-store")
    shutil.copyfile(empty_store_file, root / "mlflow.db")
    with tracking_store(root):
        ids = log_runs()
    return root / "mlflow.db", ids


@pytest.fixture
def store(tmp_path, logged_store_file):
    """A copy of the logged store in ``tmp_path``, where `tune select` run there finds it: (its URI, run ids)."""
    path, ids = logged_store_file
    shutil.copyfile(path, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}", ids


def test_the_winner_is_the_best_final_validation_accuracy_of_the_scratch_runs(tmp_path, store):
    uri, ids = store
    _, points = load_sweep(write_sweep(tmp_path / "sweep.yaml"), BASE)
    client = mlflow.MlflowClient(tracking_uri=uri)
    requested = []
    history = client.get_metric_history
    client.get_metric_history = lambda run_id, key: (requested.append(key), history(run_id, key))[1]
    experiment = client.get_experiment_by_name("fashion-mnist-softmax")
    candidates = candidates_from_runs(client, experiment.experiment_id, points, BASE, dataset_sha256=DATASET)
    assert [c.run_id for c in candidates] == [ids[(p["train.lr"], p["train.weight_decay"])] for p in points]
    assert [c.val_acc for c in candidates] == [SCORES[(p["train.lr"], p["train.weight_decay"])][0] for p in points]
    winner = best(candidates)
    assert (winner.point["train.lr"], winner.point["train.weight_decay"]) == VAL_BEST != TEST_BEST
    assert set(requested) == {"val_acc"}  # the only metric the selection asks for


def test_ties_go_to_the_first_point_in_grid_order():
    from softmax_regression.selection import Candidate

    candidates = [Candidate({"train.lr": lr}, 0.85, str(lr)) for lr in (0.3, 0.1, 0.2)]
    assert best(candidates).point == {"train.lr": 0.3}
    with pytest.raises(SweepError):
        best([])


def test_a_point_without_a_finished_run_is_named(tmp_path, store):
    uri, _ = store
    spec = {**SWEEP, "grid": {**SWEEP["grid"], "train.lr": [0.03, 0.5]}}
    _, points = load_sweep(write_sweep(tmp_path / "sweep.yaml", spec), BASE)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fashion-mnist-softmax")
    with pytest.raises(SweepError, match="no finished scratch run in MLflow for .*train.lr=0.5, train.weight_decay=0.0, "):
        candidates_from_runs(client, experiment.experiment_id, points, BASE)


def test_a_run_matching_only_the_points_own_keys_is_not_the_points(tmp_path, store):
    """The latest run with the point's lr and weight decay trained with another batch size, or on another
    validation split: neither is the point's. Without the dataset, the batch size still tells them apart."""
    uri, ids = store
    _, points = load_sweep(write_sweep(tmp_path / "sweep.yaml"), BASE)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fashion-mnist-softmax")
    (point,) = [p for p in points if (p["train.lr"], p["train.weight_decay"]) == (0.1, 0.001)]
    (on_the_data,) = candidates_from_runs(client, experiment.experiment_id, [point], BASE, dataset_sha256=DATASET)
    assert on_the_data.run_id == ids[(0.1, 0.001)] and on_the_data.val_acc == SCORES[(0.1, 0.001)][0]
    (any_data,) = candidates_from_runs(client, experiment.experiment_id, [point], BASE)
    assert any_data.val_acc == 0.97 and any_data.run_id != ids[(0.1, 0.001)]  # the other split's run
    with pytest.raises(SweepError, match=r"no finished scratch run in MLflow on the dataset ffffffffffff\.\.\. for "):
        candidates_from_runs(client, experiment.experiment_id, [point], BASE, dataset_sha256="f" * 64)
    # the whole grid: the newest run of (0.1, 0.001) is on a dataset no other point has a run on, so every
    # candidate comes from the one dataset all of them share (one validation split, comparable accuracies)
    candidates = candidates_from_runs(client, experiment.experiment_id, points, BASE)
    assert [c.run_id for c in candidates] == [ids[(p["train.lr"], p["train.weight_decay"])] for p in points]


def test_a_run_created_from_a_model_file_matches_without_the_params_added_later(tmp_path, empty_store_file):
    """evaluate creates a run for a model file whose run is gone; it records train.schedule and
    data.normalize only where they are not the defaults (the model file's own record)."""
    shutil.copyfile(empty_store_file, tmp_path / "mlflow.db")
    with tracking_store(tmp_path):
        experiment_id = mlflow.create_experiment("fashion-mnist-softmax")
        recorded = {k: v for k, v in logged_params({"train.lr": 0.2}).items()
                    if k not in ("train.schedule", "data.normalize", "train.device")}
        with mlflow.start_run(experiment_id=experiment_id, run_name="scratch") as run:
            mlflow.log_params(recorded)
            mlflow.log_metric("val_acc", 0.8, step=10)
        client = mlflow.MlflowClient()
        (found,) = candidates_from_runs(client, experiment_id, [{"train.lr": 0.2}], BASE)
        assert found.run_id == run.info.run_id
        with pytest.raises(SweepError):
            candidates_from_runs(client, experiment_id, [{"train.lr": 0.2, "train.schedule": "cosine"}], BASE)


def test_a_sweep_with_no_validation_split_is_refused(tmp_path):
    """data.val_size 0 makes the test split the validation split: a selection would choose on it."""
    with pytest.raises(SweepError, match="data.val_size is 0, so the test split would be the validation split"):
        load_sweep(write_sweep(tmp_path / "sweep.yaml", {**SWEEP, "fixed": {**SWEEP["fixed"], "data.val_size": 0}}), BASE)


def test_the_tuned_file_holds_the_winner_and_reads_back_as_dvc_flags(tmp_path):
    from softmax_regression.selection import Candidate

    point = {"train.epochs": 30, "evaluate.baseline": False, "train.lr": 0.03, "train.weight_decay": 0.001,
             "data.normalize": "per_pixel"}
    others = [Candidate({**point, "train.lr": 0.1}, 0.851, "b")]
    winner = Candidate(point, 0.856, "a")
    path = tmp_path / "tuned.yaml"
    path.write_text(tuned_yaml(winner, [winner, *others], "params/sweep.yaml", REPRODUCE))
    assert load_tuned(path) == point
    assert "0.8560 (best of 2; next: 0.8510)" in path.read_text() and "`make tuned`" in path.read_text()
    assert set_param_flags(point) == ["-S", "train.epochs=30", "-S", "evaluate.baseline=false", "-S", "train.lr=0.03",
                                      "-S", "train.weight_decay=0.001", "-S", "data.normalize=per_pixel"]
    with pytest.raises(SweepError, match="tuned params file .*missing.yaml not found; run the sweep"):
        load_tuned(tmp_path / "missing.yaml", "; run the sweep")


AUDIT = """
import sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event in ("open", "sqlite3.connect") else None)
from pipeline.tune import main
try:
    main(["select", "--sweep", "sweep.yaml", "--out", "tuned.yaml"])
except SystemExit as exit:
    code = exit.code
with open("opened.txt", "w") as out:
    out.write("\\n".join(opened))
sys.exit(code)
"""


def test_selection_never_reads_the_test_split(tmp_path, store):
    """`tune select` in a project whose test split, raw test files and evaluate reports all say another
    point is best: it opens none of them (every file it opens is recorded by an audit hook), and picks
    the validation winner. (SQLite opens its file in C: the hook sees its ``sqlite3.connect``.)"""
    uri, _ = store
    (tmp_path / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text())
    write_sweep(tmp_path / "sweep.yaml")
    test_files = [tmp_path / "data/processed/test_images.npy", tmp_path / "data/processed/test_labels.npy",
                  tmp_path / "data/raw/t10k-images-idx3-ubyte.gz", tmp_path / "data/raw/t10k-labels-idx1-ubyte.gz",
                  tmp_path / "reports/eval/metrics.json", tmp_path / "reports/eval/per_class.csv"]
    for path in test_files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the test split: not to be read by the selection")
    np.save(tmp_path / "data/processed/val_images.npy", np.zeros((1, 784), np.uint8))
    env = clean_env(PYTHONPATH=f"{PROJECT_ROOT}:{PROJECT_ROOT / 'src'}")
    result = subprocess.run([sys.executable, "-c", AUDIT], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    opened = {(tmp_path / p).resolve() for p in (tmp_path / "opened.txt").read_text().splitlines() if p}
    # the hook sees what the selection reads: the store, the params and the sweep file
    assert {(tmp_path / name).resolve() for name in ("mlflow.db", "params.yaml", "sweep.yaml")} <= opened
    assert not opened & {p.resolve() for p in test_files}
    assert not [p for p in opened if p.is_relative_to(tmp_path / "data")], "the selection opened a data file"
    tuned = load_tuned(tmp_path / "tuned.yaml")
    assert (tuned["train.lr"], tuned["train.weight_decay"]) == VAL_BEST
    assert load_params(tmp_path / "params.yaml")  # the project's params were read, not changed
