"""pipeline.pr_report's pieces on small inputs: the champion line, reading outs from a DVC cache, --help."""

import json
import sys

import pytest

from pipeline.pr_report import METRICS, champion_line, metrics_rows, read_from_cache
from pipeline.reproduce_check import out_hashes
from pipeline.tolerance import DvcCache, md5_hex
from support import PROJECT_ROOT, clean_env, run


def scores(**val_accuracy):
    return {kind: {"test_accuracy": 0.8, "test_loss": 0.5, "macro_f1": 0.8, "val_accuracy": acc}
            for kind, acc in val_accuracy.items()}


@pytest.mark.parametrize("head, expected", [
    (scores(scratch=0.85, concise=0.86), "the champion would change to the head's concise"),
    (scores(scratch=0.85, concise=0.84), "the champion would stay the base's scratch"),
    (scores(scratch=0.84, concise=0.85), "the champion would stay the base's scratch"),  # a tie keeps the title
])
def test_the_champion_moves_only_to_a_strictly_better_validation_accuracy(head, expected):
    line = champion_line(scores(scratch=0.85, concise=0.80), head)
    assert line.startswith("Best on validation: base scratch (0.8500), head ")
    assert line.endswith(expected + ".")


def test_a_model_only_one_side_has_is_listed_with_a_gap():
    rows = metrics_rows(scores(scratch=0.8, concise=0.8), scores(scratch=0.8, concise=0.8, baseline=0.9))
    assert ("baseline", "val_accuracy", None, 0.9) in rows
    assert len(rows) == 3 * len(METRICS)  # every metric of every model, a gap where a side lacks it


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


@pytest.mark.parametrize("module", ["pipeline.pr_report", "pipeline.ui", "pipeline.tune", "pipeline.lock_check"])
def test_every_command_answers_help(module):
    result = run([sys.executable, "-m", module, "--help"], PROJECT_ROOT, clean_env(), check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "--help" in result.stdout
