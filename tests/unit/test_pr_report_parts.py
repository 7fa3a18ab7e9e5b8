"""pipeline.ci.pr_report's pieces on small inputs: the champion line, reading outs from a DVC cache, --help."""

import json
import re
import sys

import numpy as np
import pytest

from pipeline.ci.pr_report import Side, champion_line, metrics_rows, read_from_cache, render
from pipeline.ci.reproduce_check import out_hashes
from pipeline.ci.tolerance import DvcCache, md5_hex
from support import PROJECT_ROOT, clean_env, run


def scores(**val_accuracy):
    return {kind: {"test_accuracy": 0.8, "test_loss": 0.5, "macro_f1": 0.8, "val_accuracy": acc}
            for kind, acc in val_accuracy.items()}


@pytest.mark.parametrize("head, expected", [
    (scores(scratch=0.85, concise=0.86), "head concise (0.8600): the champion would change to the head's concise."),
    (scores(scratch=0.85, concise=0.84), "head scratch (0.8500): the champion would stay the base's scratch."),
    # a tie keeps the title
    (scores(scratch=0.84, concise=0.85), "head concise (0.8500): the champion would stay the base's scratch."),
    (scores(scratch=0.83, concise=0.82), "head scratch (0.8300): the champion would stay the base's scratch."),
])
def test_the_champion_moves_only_to_a_strictly_better_validation_accuracy(head, expected):
    line = champion_line(scores(scratch=0.85, concise=0.80), head)
    assert line == "Best on validation: base scratch (0.8500), " + expected


EVALUATE_WRITES = ("test_accuracy", "test_loss", "macro_f1", "val_accuracy", "test_ece", "test_mce", "test_brier",
                   "temperature", "test_ece_calibrated")
"""What evaluate writes per model into reports/eval/metrics.json, spelt out here rather than taken from
pr_report.METRICS: the report's list checked against its own length could drop a metric unnoticed."""


def test_evaluate_writes_exactly_these_metrics():
    """evaluate's entry per model is its Evaluation's summary, its Calibration's summary and val_accuracy
    (pipeline/evaluate.py): a metric evaluate gains shows here, to be added to EVALUATE_WRITES and the report."""
    from softmax_regression.evaluation.calibration import calibrate
    from softmax_regression.evaluation.metrics import evaluate_probabilities

    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    probabilities = rng.dirichlet(np.ones(10), size=200)
    written = {**evaluate_probabilities("scratch", probabilities, labels).summary(),
               **calibrate(probabilities, labels, probabilities, labels, 15).summary(), "val_accuracy": 0.5}
    assert sorted(written) == sorted(EVALUATE_WRITES)


def every_metric(**first_value: float) -> dict[str, dict]:
    """Each model's entry as evaluate writes it, every number distinct: the i-th metric is ``first_value + i / 100``,
    so a row that shows another metric's or another model's number is caught."""
    return {kind: {metric: round(start + i / 100, 4) for i, metric in enumerate(EVALUATE_WRITES)}
            for kind, start in first_value.items()}


def test_every_metric_of_every_model_is_a_row_with_its_own_numbers():
    base, head = every_metric(scratch=0.1, concise=0.2), every_metric(scratch=0.3, concise=0.4, baseline=0.5)
    rows = metrics_rows(base, head)
    cells = {(kind, metric): (old, new) for kind, metric, old, new in rows}
    assert len(cells) == len(rows)  # no row twice
    assert cells == {(kind, metric): (base[kind][metric] if kind in base else None, head[kind][metric])
                     for kind in ("scratch", "concise", "baseline") for metric in EVALUATE_WRITES}
    assert cells["baseline", "temperature"] == (None, 0.57)  # a model only the head has: a gap on the base side
    assert cells["concise", "test_ece_calibrated"] == (0.28, 0.48)


def test_the_markdown_table_shows_every_metric_with_its_change():
    base, head = every_metric(scratch=0.1, concise=0.2), every_metric(scratch=0.3, concise=0.4, baseline=0.5)
    page = render({}, Side("base", "b", base, {}), Side("head", "h", head, {}), [], "identical")
    table = [row for row in re.findall(r"^\| (\w+) \| (\w+) \| (\S+) \| (\S+) \| (\S+) \|$", page, re.M)
             if row[0] != "model"]  # the header
    assert [(kind, metric) for kind, metric, *_ in table] == [
        (kind, metric) for kind in ("scratch", "concise", "baseline") for metric in EVALUATE_WRITES]
    assert ("scratch", "temperature", "0.1700", "0.3700", "+0.2000") in table
    assert ("baseline", "test_ece", "-", "0.5400", "-") in table


def test_a_base_from_before_calibration_shows_gaps_for_what_it_lacks():
    """A base revision whose evaluate wrote accuracies only: its calibration cells are gaps, not zeros."""
    before = {kind: {m: v for m, v in values.items() if m in ("test_accuracy", "test_loss", "macro_f1",
                                                                "val_accuracy")}
              for kind, values in every_metric(scratch=0.1, concise=0.2).items()}
    cells = {(kind, metric): (old, new)
             for kind, metric, old, new in metrics_rows(before, every_metric(scratch=0.3, concise=0.4))}
    assert cells["scratch", "val_accuracy"] == (0.13, 0.33)
    assert cells["scratch", "temperature"] == (None, 0.37) and cells["concise", "test_ece"] == (None, 0.44)


def cache_with(tmp_path, files: dict[str, bytes]) -> DvcCache:
    cache = DvcCache(tmp_path / "cache")
    for data in files.values():
        md5 = md5_hex(data)
        path = cache.directory / "files" / "md5" / md5[:2] / md5[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return cache


def test_files_and_files_inside_directory_outs_are_read_from_the_cache(tmp_path):
    png, metrics = b"\x89PNG fake", b'{"scratch": {}}'
    cache = cache_with(tmp_path, {"png": png, "metrics": metrics})
    manifest = json.dumps([{"md5": md5_hex(png), "relpath": "scratch.png"}]).encode()
    dir_md5 = md5_hex(manifest) + ".dir"
    path = cache.directory / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(manifest)
    lock = f"""schema: '2.0'
stages:
  evaluate:
    outs:
    - path: reports/eval/confusion_png
      md5: {dir_md5}
    - path: reports/eval/metrics.json
      md5: {md5_hex(metrics)}
"""
    outs = out_hashes(lock)
    assert read_from_cache(cache, outs, "reports/eval/metrics.json") == metrics
    assert read_from_cache(cache, outs, "reports/eval/confusion_png/scratch.png") == png
    assert read_from_cache(cache, outs, "reports/eval/confusion_png/concise.png") is None
    assert read_from_cache(cache, outs, "reports/train/scratch_curves.png") is None


@pytest.mark.parametrize("module", ["pipeline.ci.pr_report", "pipeline.ui", "pipeline.tune", "pipeline.ci.lock_check"])
def test_every_command_answers_help(module):
    result = run([sys.executable, "-m", module, "--help"], PROJECT_ROOT, clean_env(), check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "--help" in result.stdout
