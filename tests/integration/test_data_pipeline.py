"""Real `dvc repro` of fetch + preprocess on the real Fashion-MNIST, in a temporary git copy."""

import json

import numpy as np
import pytest

from support import copy_project, run, set_param, stages_ran


@pytest.fixture(scope="module")
def data_project(tmp_path_factory, system_data_dir):
    project = copy_project(tmp_path_factory.mktemp("data") / "project")
    set_param(project, "data.mirrors", [])  # offline: the system copy must be what is used
    set_param(project, "data.system_dir", str(system_data_dir))
    run(["git", "commit", "-qam", "offline params"], project)
    result = run(["dvc", "repro", "preprocess"], project)
    return project, result.stdout + result.stderr


def test_fetch_and_preprocess_run_on_real_data(data_project):
    project, output = data_project
    assert stages_ran(output) == ["fetch", "preprocess"]
    assert sorted(p.name for p in (project / "data/raw").iterdir()) == [
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    ]


def test_split_sizes_and_class_balance(data_project):
    project, _ = data_project
    processed = project / "data/processed"
    sizes = {}
    labels = {}
    for split in ("train", "val", "test"):
        images = np.load(processed / f"{split}_images.npy")
        labels[split] = np.load(processed / f"{split}_labels.npy")
        assert images.dtype == np.uint8 and images.shape == (len(labels[split]), 784)
        sizes[split] = len(labels[split])
    assert sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    train_val = np.concatenate([labels["train"], labels["val"]])
    assert np.bincount(train_val, minlength=10).tolist() == [6000] * 10
    assert np.bincount(labels["test"], minlength=10).tolist() == [1000] * 10
    # stratified: the validation set holds 500 of each class
    assert np.bincount(labels["val"], minlength=10).tolist() == [500] * 10
    stats = json.loads((project / "reports/data/stats.json").read_text())
    assert stats["splits"]["val"]["size"] == 5000
    assert set(stats["splits"]["test"]["class_counts"].values()) == {1000}


def test_preview_figure_is_a_png(data_project):
    project, _ = data_project
    png = (project / "reports/data/preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_second_repro_skips_both_stages(data_project):
    project, _ = data_project
    result = run(["dvc", "repro", "preprocess"], project)
    assert stages_ran(result.stdout) == []
    status = run(["dvc", "status", "preprocess"], project)
    assert "up to date" in status.stdout


def test_changing_val_size_reruns_preprocess_only(data_project, tmp_path):
    project, _ = data_project
    set_param(project, "data.val_size", 0)
    try:
        result = run(["dvc", "repro", "preprocess"], project)
        assert stages_ran(result.stdout) == ["preprocess"]
        sizes = {s: len(np.load(project / f"data/processed/{s}_labels.npy")) for s in ("train", "val", "test")}
        assert sizes == {"train": 60_000, "val": 10_000, "test": 10_000}
    finally:
        run(["git", "checkout", "params.yaml"], project)
        run(["dvc", "repro", "preprocess"], project)
