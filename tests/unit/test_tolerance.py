"""pipeline.ci.tolerance: identical bytes, within tolerance, or drift, per out (`reproduce_check --rebuilt` on a
real built project: ``integration/test_reproduce_rebuilt.py``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.ci.tolerance import DRIFT, IDENTICAL, WITHIN, DvcCache, Verdict, check_outs, compare_file
from softmax_regression.data.features import Standardization
from softmax_regression.models.file import model_bytes


def model_file(shift: float = 0.0, lr_param: float = 0.1) -> bytes:
    W = torch.linspace(-0.5, 0.5, 784 * 10).reshape(784, 10)
    return model_bytes("scratch", W + shift, torch.zeros(10), 28, {"train.lr": lr_param})


def test_model_weights_within_the_tolerance_are_the_same_model_and_beyond_it_drift():
    committed = model_file()
    assert compare_file("models/scratch.pt", committed, committed) == Verdict(IDENTICAL)
    near = compare_file("models/scratch.pt", committed, model_file(shift=1e-7))
    assert near.outcome == WITHIN and "(tolerance 0.0001)" in near.detail
    assert compare_file("models/scratch.pt", committed, model_file(shift=1e-2)).outcome == DRIFT


@pytest.mark.parametrize("mode", ["global", "per_pixel"])
def test_a_standardized_model_compares_its_statistics_by_tolerance_too(mode):
    """The statistics are tensors in the file's preprocessing record: moved in the last bits, the same model."""
    images = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
    standardization = Standardization.fit(images, mode)
    W = torch.linspace(-0.5, 0.5, 784 * 10).reshape(784, 10)
    committed = model_bytes("scratch", W, torch.zeros(10), 28, {}, standardization)
    moved = Standardization(mode, standardization.mean + 1e-7, standardization.std)
    rebuilt = model_bytes("scratch", W, torch.zeros(10), 28, {}, moved)
    assert compare_file("models/scratch.pt", committed, committed) == Verdict(IDENTICAL)
    assert compare_file("models/scratch.pt", committed, rebuilt).outcome == WITHIN


def test_a_model_trained_with_other_params_is_drift_whatever_its_weights():
    verdict = compare_file("models/scratch.pt", model_file(), model_file(lr_param=0.2))
    assert verdict == Verdict(DRIFT, "model fields differ: params")
    assert compare_file("models/scratch.pt", model_file(), b"not a model").outcome == DRIFT


def test_a_nan_in_the_rebuilt_weights_is_drift_wherever_it_is():
    """The largest difference per tensor, then over tensors: a NaN in the bias (compared after W) is drift too."""
    W = torch.linspace(-0.5, 0.5, 784 * 10).reshape(784, 10)
    committed = model_bytes("scratch", W, torch.zeros(10), 28, {})
    for rebuilt in (model_bytes("scratch", W, torch.full((10,), float("nan")), 28, {}),
                    model_bytes("scratch", W.clone().fill_(float("nan")), torch.zeros(10), 28, {})):
        assert compare_file("models/scratch.pt", committed, rebuilt) == Verdict(DRIFT, "the weights hold NaN or "
                                                                                       "infinity")


@pytest.mark.parametrize("path, rebuilt", [
    ("reports/eval/metrics.json", b"null"),
    ("reports/eval/metrics.json", b"1"),
    ("reports/train/scratch_history.csv", b"epoch,train_loss,train_acc,val_acc\n1,0.80\n2,0.578,0.8108,0.81\n"),
    ("reports/train/scratch_history.csv", b"epoch,train_loss,train_acc,val_acc\n1,0.80,0.7402,0.7922,9\n"
                                          b"2,0.578,0.8108,0.81\n"),
    ("reports/train/scratch_history.csv", b"epoch,train_loss,train_acc,val_acc\n1,0.80,0.7402,0.7922\n"
                                          b"2,0.578,0.8108,0.81,9\n"),
], ids=["metrics null", "metrics a number", "a short row", "a long row", "a long later row"])
def test_a_malformed_rebuilt_metrics_or_history_file_is_drift_not_a_traceback(path, rebuilt):
    committed = (metrics() if path.endswith(".json") else
                 b"epoch,train_loss,train_acc,val_acc\n1,0.80,0.7402,0.7922\n2,0.578,0.8108,0.81\n")
    assert compare_file(path, committed, rebuilt).outcome == DRIFT


def metrics(**changes) -> bytes:
    values = {"scratch": {"test_accuracy": 0.8332, "macro_f1": 0.8301, "test_loss": 0.480754, "n_test": 10000,
                          "test_ece": 0.019075, "test_mce": 0.176854, "test_brier": 0.240104,
                          "temperature": 0.867853, "test_ece_calibrated": 0.010977}}
    values["scratch"].update(changes)
    return json.dumps(values).encode()


# The bands docs/reproducibility.md states, as numbers: accuracies, F1, ECE and Brier within 0.002, the MCE
# (a bin of a few images) within 0.05, losses and the temperature within 0.1%.
@pytest.mark.parametrize("changes, outcome", [
    ({"test_accuracy": 0.8332 + 0.0015}, WITHIN),
    ({"test_accuracy": 0.8332 + 0.0025}, DRIFT),
    ({"macro_f1": 0.8301 - 0.0025}, DRIFT),
    ({"test_loss": 0.480754 * 1.0008}, WITHIN),
    ({"test_loss": 0.480754 * 1.0015}, DRIFT),
    ({"n_test": 10001}, DRIFT),  # a count has no tolerance
    ({"test_ece": 0.019075 + 0.0015}, WITHIN),
    ({"test_ece": 0.019075 + 0.0025}, DRIFT),
    ({"test_ece_calibrated": 0.010977 + 0.0025}, DRIFT),
    ({"test_brier": 0.240104 + 0.0025}, DRIFT),
    ({"test_mce": 0.176854 + 0.04}, WITHIN),
    ({"test_mce": 0.176854 + 0.06}, DRIFT),
    ({"temperature": 0.867853 * 1.0008}, WITHIN),
    ({"temperature": 0.867853 * 1.0015}, DRIFT),
])
def test_metrics_move_within_their_bands_or_drift(changes, outcome):
    assert compare_file("reports/eval/metrics.json", metrics(), metrics(**changes)).outcome == outcome


def test_history_tables_are_compared_cell_by_cell_by_their_column_names():
    committed = b"epoch,train_loss,train_acc,val_acc\n1,0.80,0.7402,0.7922\n2,0.578,0.8108,0.81\n"
    within = b"epoch,train_loss,train_acc,val_acc\n1,0.8000001,0.7403,0.7922\n2,0.578,0.8108,0.8101\n"
    assert compare_file("reports/train/scratch_history.csv", committed, within).outcome == WITHIN
    drift = compare_file("reports/train/scratch_history.csv", committed, committed.replace(b"0.7922", b"0.7822"))
    assert drift.outcome == DRIFT and "val_acc (row 1)" in drift.detail
    assert compare_file("reports/train/scratch_history.csv", committed, committed[:-20]).outcome == DRIFT


def test_reliability_tables_follow_the_models_and_metrics():
    """Derived from the model and the test split, as the confusion tables are: no verdict of their own."""
    assert compare_file("reports/eval/reliability/scratch.csv", b"a\n1\n", b"a\n2\n") is None


def test_data_must_be_identical_and_a_missing_reference_is_drift_naming_dvc_pull():
    assert compare_file("data/processed/meta.json", b"{}", b"{ }").outcome == DRIFT
    missing = compare_file("models/scratch.pt", None, model_file())
    assert missing.outcome == DRIFT and "`dvc pull`" in missing.detail
    assert compare_file("reports/report/report.html", b"<a>", b"<b>") is None  # derived: decided later


def cached(cache: Path, data: bytes) -> str:
    md5 = hashlib.md5(data).hexdigest()
    (cache / "files/md5" / md5[:2]).mkdir(parents=True, exist_ok=True)
    (cache / "files/md5" / md5[:2] / md5[2:]).write_bytes(data)
    return md5


def stages_with(cache: Path, model: bytes, figures: dict[str, bytes]) -> dict:
    """The ``stages`` of a dvc.lock whose outs, a model file and a folder of figures, are in ``cache``."""
    listing = [{"md5": cached(cache, data), "relpath": name} for name, data in sorted(figures.items())]
    manifest = json.dumps(listing).encode()
    dir_md5 = hashlib.md5(manifest).hexdigest() + ".dir"
    (cache / "files/md5" / dir_md5[:2]).mkdir(parents=True, exist_ok=True)
    (cache / "files/md5" / dir_md5[:2] / dir_md5[2:]).write_bytes(manifest)
    return {"train": {"outs": [{"path": "models/scratch.pt", "md5": cached(cache, model)}]},
            "report": {"outs": [{"path": "reports/figures", "md5": dir_md5}]}}


def rebuild(root: Path, model: bytes, figures: dict[str, bytes]) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "models/scratch.pt").write_bytes(model)
    (root / "reports/figures").mkdir(parents=True)
    for name, data in figures.items():
        (root / "reports/figures" / name).write_bytes(data)
    return root


@pytest.mark.parametrize("shift, model_outcome, figure_outcome", [
    (0.0, IDENTICAL, WITHIN),
    (1e-7, WITHIN, WITHIN),
    (1e-2, DRIFT, DRIFT),
])
def test_derived_outs_follow_the_models_and_metrics(tmp_path, shift, model_outcome, figure_outcome):
    """A figure whose bytes differ is within tolerance when every value-compared out is, drift otherwise."""
    stages = stages_with(tmp_path / "cache", model_file(), {"a.png": b"committed", "b.png": b"same"})
    rebuilt = rebuild(tmp_path / "rebuilt", model_file(shift), {"a.png": b"rendered anew", "b.png": b"same"})
    checks = {check.path: check.verdict.outcome for check in check_outs(stages, rebuilt, DvcCache(tmp_path / "cache"))}
    assert checks == {"models/scratch.pt": model_outcome, "reports/figures": figure_outcome}


def test_a_file_missing_from_a_rebuilt_folder_is_drift(tmp_path):
    stages = stages_with(tmp_path / "cache", model_file(), {"a.png": b"committed", "b.png": b"same"})
    rebuilt = rebuild(tmp_path / "rebuilt", model_file(), {"a.png": b"committed"})
    checks = {c.path: c.verdict for c in check_outs(stages, rebuilt, DvcCache(tmp_path / "cache"))}
    assert checks["reports/figures"] == Verdict(DRIFT, "reports/figures/b.png was not written by the rebuild")


def test_a_file_the_committed_folder_lacks_is_drift_naming_it(tmp_path):
    stages = stages_with(tmp_path / "cache", model_file(), {"a.png": b"committed"})
    rebuilt = rebuild(tmp_path / "rebuilt", model_file(), {"a.png": b"committed", "extra.png": b"new"})
    checks = {c.path: c.verdict for c in check_outs(stages, rebuilt, DvcCache(tmp_path / "cache"))}
    assert checks["reports/figures"] == Verdict(DRIFT, "reports/figures/extra.png is not in the committed out")
