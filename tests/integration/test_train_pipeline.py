"""Real `dvc repro` of the train stages on the real Fashion-MNIST, in a fresh clone of the project."""

import hashlib

import numpy as np
import pytest
import torch

from softmax_regression.models.file import load_model
from softmax_regression.training.history import read_history_csv
from support import clean_env, run, set_param, stages_ran

KINDS = ("scratch", "concise")


@pytest.fixture(scope="module")
def trained(pipeline_project):
    return pipeline_project


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_all_stages_ran(trained):
    _, output = trained
    assert stages_ran(output) == ["fetch", "preprocess", "train_scratch", "train_concise", "train_baseline",
                                  "evaluate", "report"]


def test_fresh_clone_reproduces_the_committed_lock_and_leaves_git_clean(trained):
    """The README's pipeline command in a real `git clone`: the committed dvc.lock, byte for byte."""
    project, _ = trained
    assert (project.parent / "first-run-status.txt").read_text() == ""
    committed = run(["git", "show", "HEAD:dvc.lock"], project).stdout.encode()
    assert (project.parent / "first-run-dvc.lock").read_bytes() == committed
    lock = (project / "dvc.lock").read_text()
    assert "_run.json" not in lock and str(project) not in lock


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
    for mine, theirs in ((scratch.W, concise.W), (scratch.b, concise.b)):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_model_file_records_only_the_params_that_shaped_it(trained, kind):
    project, _ = trained
    params = load_model(project / f"models/{kind}.pt").params
    assert params == {"train.epochs": 10, "train.batch_size": 256, "train.lr": 0.1, "train.weight_decay": 0.0,
                      "train.init_std": 0.01, "train.seed": 0, "train.loss": "cross_entropy"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_rerun_in_another_process_is_byte_identical(trained, kind):
    project, _ = trained
    outs = [project / f"models/{kind}.pt", project / f"reports/train/{kind}_history.csv"]
    first = [digest(p) for p in outs]  # written by the pipeline's own process of the stage
    # a throwaway store: this rerun is not a pipeline execution the shared project should record
    scratch_store = f"sqlite:///{project.parent / f'rerun-{kind}.db'}"
    run(["python", "-m", "pipeline", f"train_{kind}", "--no-progress"], project,
        env=clean_env(MLFLOW_TRACKING_URI=scratch_store))
    assert [digest(p) for p in outs] == first
    # nothing of the retraining reaches DVC's graph: not this stage, nor evaluate and report after it
    assert "Data and pipelines are up to date." in run(["dvc", "status"], project).stdout


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
        result = run(["python", "-m", "pipeline", "train_concise"], project, check=False,
                     env=clean_env())
        assert result.returncode == 2
        assert result.stderr.strip() == "train_concise: error: params key train.batch_size is 0; expected an integer between 1 and 60000"
        assert digest(project / "models/concise.pt") == before
    finally:
        run(["git", "checkout", "params.yaml"], project)
