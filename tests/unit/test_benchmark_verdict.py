"""The benchmarks' own arithmetic, without running them (`make bench-pipeline` takes minutes)."""

import sys

from support import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
from pipeline_speed import Row, verdict  # noqa: E402


def test_a_stage_that_was_not_measured_misses_and_the_repro_rows_are_not_counted():
    rows = [Row("dvc repro, cold (7 stage(s) ran)", 40.0, None, "", None),
            Row("  stage fetch: 1.10x the bare import", 1.0, 90.0, "<= 1.3x, <= 1200 MB", True),
            Row("  stage train_scratch", float("nan"), None, "(not measured)", False)]
    assert verdict(rows) == "1 of 2 stages meet their target; missed: stage train_scratch"
    assert verdict(rows[:2]) == "1 of 1 stages meet their target"
