"""Hostile inputs end in one line, at once: YAML alias bombs and duplicate keys in params.yaml, and
inputs that are no regular file (a named pipe with no writer, a device, a socket)."""

import os
import re
import socket
import sys
from pathlib import Path

import pytest

from predicting import assert_one_line_error, predict_side_by_side
from softmax_regression.data.sources import SourceFailed, read_directory
from softmax_regression.params import excerpt
from support import PROJECT_ROOT, clean_env, run

MAX_RSS_MB = 200


def alias_bomb(indent: str = "") -> str:
    """Ten levels of anchors, each a list of nine aliases of the one before: 9**10 nodes expanded."""
    lines = [f"{indent}x0: &x0 [" + ", ".join(["1"] * 9) + "]"]
    lines += [f"{indent}x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "bomb as a section": (alias_bomb(), "YAML anchor &x0 on line 1"),
    "bomb as a known key's value": ("data:\n  resize:\n" + alias_bomb("    "), "YAML anchor &x0 on line 3"),
    "bomb nested in a value": ("train:\n  epochs: 3\n  lr:\n    deep:\n" + alias_bomb("      "),
                               "YAML anchor &x0 on line 5"),
    "an alias of a plain value": ("data:\n  seed: &s 3\ntrain:\n  seed: *s\n", "YAML anchor &s on line 2"),
    "duplicate key in a section": ("train:\n  epochs: 10\n  lr: 0.1\n  epochs: 1\n",
                                   "duplicate key 'epochs' on lines 2 and 4"),
    "duplicate key on one line": ("train: {lr: 0.1, epochs: 3, lr: 5.0}\n", "duplicate key 'lr' on line 1, twice"),
    "duplicate section": ("train:\n  epochs: 10\ndata:\n  seed: 1\ntrain:\n  lr: 0.1\n",
                          "duplicate key 'train' on lines 1 and 5"),
}

CHECK_WITH_PEAK = """
import resource, subprocess, sys
result = subprocess.run([sys.executable, "-m", "pipeline.ci.check_params", sys.argv[1]], capture_output=True, text=True,
                        timeout=30)
sys.stdout.write(result.stderr)
print(result.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_params_file_is_one_line_at_once_in_bounded_memory(name, tmp_path):
    text, expected = HOSTILE[name]
    path = tmp_path / "params.yaml"
    path.write_text(text)
    result = run([sys.executable, "-c", CHECK_WITH_PEAK, str(path)], PROJECT_ROOT, clean_env(), timeout=60)
    *lines, last = result.stdout.strip().splitlines()
    code, peak_mb = map(int, last.split())
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"check-params: error: params file {path}: {expected}"), lines
    assert peak_mb < MAX_RSS_MB, f"{peak_mb} MB"


def test_a_stage_refuses_the_bomb_before_any_work(tmp_path):
    """What `dvc repro` would run: the stage's own params check, exit 2 and one line."""
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  resize:\n" + alias_bomb("    "))
    result = run([sys.executable, "-m", "pipeline", "preprocess", "--params", str(path)], PROJECT_ROOT, clean_env(),
                 check=False, timeout=120)  # refused before any work: nothing of the project is touched
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"preprocess: error: params file {path}: YAML anchor &x0 on line 3: a params file takes no anchors or "
        "aliases; write the value out"]


def test_an_error_shows_a_bounded_excerpt_of_a_huge_value():
    huge = [[list(range(1000))] * 1000] * 1000
    shown = excerpt(huge)
    assert len(shown) <= 120 and shown.startswith("[[[...], [...], [...], [...], ...]")
    assert len(excerpt("x" * 10_000)) <= 120


@pytest.fixture
def not_regular(tmp_path):
    """A real named pipe (no writer), a real Unix socket and a character device."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        yield {"a named pipe (FIFO)": fifo, "a socket": sock_path, "a character device": Path("/dev/zero")}
    finally:
        server.close()


def test_fmnist_predict_refuses_what_is_no_regular_file_before_reading(not_regular, tmp_path):
    import torch

    from samples import save_model

    model = tmp_path / "model.pt"
    save_model(model, "scratch", torch.zeros(784, 10), torch.zeros(10), side=28, params={})
    # a process each, started together: opened, the pipe would block forever and the device never end
    results = predict_side_by_side(*[(model, path) for path in not_regular.values()], cwd=tmp_path)
    for (kind, path), result in zip(not_regular.items(), results):
        assert_one_line_error(result, f"{path}: is {kind}, not a regular file")


def test_a_data_folder_holding_a_named_pipe_fails_that_source_in_one_line(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    os.mkfifo(folder / "train-images-idx3-ubyte.gz")
    with pytest.raises(SourceFailed, match=r"train-images-idx3-ubyte.gz: is a named pipe \(FIFO\), not a regular file"):
        read_directory(folder)


def test_the_mlflow_limits_the_params_encode_are_the_installed_mlflows():
    from mlflow.utils import validation

    from softmax_regression import params

    assert params.MLFLOW_MAX_EXPERIMENT_NAME == validation.MAX_EXPERIMENT_NAME_LENGTH
    assert params.MLFLOW_MAX_PARAM_VALUE == validation.MAX_PARAM_VAL_LENGTH


@pytest.mark.parametrize("section, key, value, expected", [
    ("tracking", "experiment", "x" * 501, "expected a non-empty string of at most 500 characters"),
    ("tracking", "registered_model", "team/model", "without '/', ':' or quotes"),
    ("tracking", "registered_model", "models:champion", "without '/', ':' or quotes"),
    ("tracking", "registered_model", "bob's model", "without '/', ':' or quotes"),
    ("tracking", "registered_model", 'the "best"', "without '/', ':' or quotes"),
    ("tracking", "registered_model", "..", "not '.' nor starting with '..'"),
    ("tracking", "registered_model", "..champion", "not '.' nor starting with '..'"),
    ("tracking", "registered_model", ".", "not '.' nor starting with '..'"),
    ("data", "local_dir", "/d" * 3001, "6002 characters as an MLflow param; expected at most 6000"),  # cut
])
def test_a_value_mlflow_would_refuse_is_refused_up_front(section, key, value, expected):
    from samples import project_params
    from softmax_regression.params import ParamsError, validate_params

    with pytest.raises(ParamsError, match=re.escape(expected)) as caught:
        validate_params(project_params({f"{section}.{key}": value}))
    assert f"params key {section}.{key} is " in str(caught.value) and len(str(caught.value)) < 400


def test_each_of_those_values_does_fail_inside_mlflow(tmp_path):
    """The rules are MLflow's: each name above is refused by MLflow itself, each name MLflow takes passes them
    (but a name with a quote, which MLflow's version search cannot hold), and the long param value is cut (so the run would record another value than the stage used)."""
    import mlflow

    from samples import project_params
    from softmax_regression.params import validate_params

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)  # not a registry an earlier test set
    for name in ("x" * 501,):
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.create_experiment(name)
    for name in ("team/model", "models:champion", "..", "..champion", ".", "...", ".. x"):
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.create_registered_model(name)
    for name in (".champion", "a..b", "fashion mnist", "x" * 250):  # and what MLflow takes, the rules take
        client.create_registered_model(name)
        validate_params(project_params({"tracking.registered_model": name}))
    client.create_registered_model("bob's model")  # but a quote: MLflow takes it, and then cannot find its versions
    with pytest.raises(mlflow.exceptions.MlflowException, match="Invalid clause"):
        client.search_model_versions("name = 'bob's model'")
    run = client.create_run(client.create_experiment("e"))
    client.log_param(run.info.run_id, "data.local_dir", "/d" * 3001)
    assert len(client.get_run(run.info.run_id).data.params["data.local_dir"]) == 6000
