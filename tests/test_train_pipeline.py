"""Real `dvc repro` of the train stages on the real Fashion-MNIST, in a temporary git copy."""

import hashlib

import numpy as np
import pytest
import torch

from softmax_regression.models import load_model
from softmax_regression.training import read_history_csv

from support import clean_env, run, set_param, stages_ran, stages_skipped

pytestmark = pytest.mark.slow
KINDS = ("scratch", "concise")


@pytest.fixture(scope="module")
def trained(pipeline_project):
    return pipeline_project


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_all_stages_ran(trained):
    _, output = trained
    assert stages_ran(output) == ["fetch", "preprocess", "train_scratch", "train_concise", "evaluate", "report"]


@pytest.mark.parametrize("kind", KINDS)
def test_meets_the_chapters_bar_and_its_accuracy(trained, kind):
    project, _ = trained
    history = read_history_csv((project / f"reports/train/{kind}_history.csv").read_text())
    assert [r.epoch for r in history] == list(range(1, 11))
    last = history[-1]
    assert last.train_loss < 0.5 and last.train_acc > 0.7 and last.val_acc > 0.7
    model = load_model(project / f"models/{kind}.pt")
    images = np.load(project / "data/processed/test_images.npy")
    labels = np.load(project / "data/processed/test_labels.npy")
    predicted = model.predict_proba(torch.from_numpy(images)).argmax(dim=1).numpy()
    test_acc = float((predicted == labels).mean())
    assert test_acc >= 0.82, f"{kind} test accuracy {test_acc:.4f} below the chapter's 0.824"
    assert (project / f"reports/train/{kind}_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_scratch_and_concise_end_in_the_same_place(trained):
    project, _ = trained
    scratch, concise = (load_model(project / f"models/{k}.pt") for k in KINDS)
    torch.testing.assert_close(scratch.model.weights()[0], concise.model.weights()[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_reruns_in_separate_processes_are_byte_identical(trained, kind):
    project, _ = trained
    outs = [project / f"models/{kind}.pt", project / f"reports/train/{kind}_history.csv"]
    first = [digest(p) for p in outs]
    run_info = (project / f"models/{kind}_run.json").read_bytes()
    for i in range(2):
        # a throwaway store: these reruns are not pipeline executions the shared project should record
        scratch_store = f"sqlite:///{project.parent / f'rerun-{kind}-{i}.db'}"
        run(["python", "-m", "pipeline.train", "--model", kind, "--no-progress"], project,
            env=clean_env(MLFLOW_TRACKING_URI=scratch_store))
        assert [digest(p) for p in outs] == first
    (project / f"models/{kind}_run.json").write_bytes(run_info)
    assert "up to date" in run(["dvc", "status", f"train_{kind}"], project).stdout


def test_changing_lr_reruns_only_the_train_stages(trained):
    project, _ = trained
    set_param(project, "train.lr", 0.05)
    try:
        result = run(["dvc", "repro", "train_scratch", "train_concise"], project)
        assert sorted(stages_ran(result.stdout)) == ["train_concise", "train_scratch"]
        assert {"fetch", "preprocess"} <= set(stages_skipped(result.stdout))
    finally:
        run(["git", "checkout", "params.yaml"], project)
        run(["dvc", "repro", "train_scratch", "train_concise"], project)


def test_diverging_run_fails_naming_the_epoch_and_writes_no_model(trained):
    project, _ = trained
    set_param(project, "train.lr", 1e6)
    try:
        result = run(["dvc", "repro", "train_scratch"], project, check=False)
        assert result.returncode != 0
        assert "diverged in epoch 1" in result.stderr + result.stdout
        assert not (project / "models/scratch.pt").exists()
        assert list((project / "models").glob(".*")) == []
    finally:
        run(["git", "checkout", "params.yaml"], project)
        run(["dvc", "repro", "train_scratch"], project)


def test_bad_train_params_stop_before_any_work(trained):
    project, _ = trained
    set_param(project, "train.batch_size", 0)
    try:
        before = digest(project / "models/concise.pt")
        result = run(["python", "-m", "pipeline.train", "--model", "concise"], project, check=False,
                     env=clean_env())
        assert result.returncode == 2
        assert result.stderr.strip() == "train: error: params key train.batch_size is 0; expected an integer >= 1"
        assert digest(project / "models/concise.pt") == before
    finally:
        run(["git", "checkout", "params.yaml"], project)
