"""pipeline.ci.pr_report's pieces on small inputs: the champion line, reading outs from a DVC cache, --help."""

import json
import re
import sys

import numpy as np
import pytest

from pipeline.ci import pr_report
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


FIGURES = """
| base | head |
|---|---|
| ![base scratch_curves.png](base-scratch_curves.png) | ![head scratch_curves.png](head-scratch_curves.png) |
| ![base concise_curves.png](base-concise_curves.png) | ![head concise_curves.png](head-concise_curves.png) |
| ![base confusion_scratch.png](base-confusion_scratch.png) | ![head confusion_scratch.png](head-confusion_scratch.png) |
| ![base confusion_concise.png](base-confusion_concise.png) | ![head confusion_concise.png](head-confusion_concise.png) |
"""
"""The figures both sides have, whichever of them scored the baseline."""

CHAPTER_FIGURES = ("scratch_curves.png", "concise_curves.png", "confusion_scratch.png", "confusion_concise.png")


@pytest.mark.parametrize("base_kinds, head_kinds, baseline_row", [
    (("scratch", "concise"), ("scratch", "concise", "baseline"),
     "| (not in the base) | ![head confusion_baseline.png](head-confusion_baseline.png) |\n"),
    (("scratch", "concise", "baseline"), ("scratch", "concise"),
     "| ![base confusion_baseline.png](base-confusion_baseline.png) | (not in the head) |\n"),
], ids=["baseline in the head only", "baseline in the base only"])
def test_a_figure_only_one_side_has_shows_with_a_gap_on_the_other(base_kinds, head_kinds, baseline_row):
    def side(name, kinds):
        figures = {figure: b"png" for figure in CHAPTER_FIGURES}
        if "baseline" in kinds:
            figures["confusion_baseline.png"] = b"png"
        return Side(name, name[0], every_metric(**{kind: 0.1 for kind in kinds}), figures)

    page = render({}, side("base", base_kinds), side("head", head_kinds), [], "identical")
    assert page.split("## Figures\n")[1] == FIGURES + baseline_row
    # a job summary or a comment, where the files beside the report are nowhere: the same without figures
    comment = render({}, side("base", base_kinds), side("head", head_kinds), [], "identical", figures=False)
    assert page.startswith(comment.rstrip("\n")) and "![" not in comment and "## Figures" not in comment


def base_in_cache(tmp_path, monkeypatch, kinds, confusion):
    """A base revision that scored ``kinds`` and whose dvc.lock records the curves and the confusion PNGs
    ``confusion``, all in a cache ``base_side`` reads; the builds it would start are counted, not run."""
    metrics = json.dumps(every_metric(**{kind: 0.1 for kind in kinds})).encode()
    files = {f"reports/train/{kind}_curves.png": f"{kind} curves".encode() for kind in ("scratch", "concise")}
    cache = cache_with(tmp_path, {**files, "metrics": metrics,
                                  **{kind: f"{kind} confusion".encode() for kind in confusion}})
    manifest = json.dumps([{"md5": md5_hex(f"{kind} confusion".encode()), "relpath": f"{kind}.png"}
                           for kind in confusion]).encode()
    dir_md5 = md5_hex(manifest) + ".dir"
    path = cache.directory / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(manifest)
    outs = "".join(f"    - path: {out}\n      md5: {md5_hex(data)}\n" for out, data in files.items())
    lock = f"""schema: '2.0'
stages:
  evaluate:
    outs:
{outs}    - path: reports/eval/confusion_png
      md5: {dir_md5}
    - path: reports/eval/metrics.json
      md5: {md5_hex(metrics)}
"""
    builds = []
    monkeypatch.setattr(pr_report.reproduce_check, "dvc_cache", lambda project: cache)
    monkeypatch.setattr(pr_report.reproduce_check, "git", lambda args, cwd: lock)
    monkeypatch.setattr(pr_report, "build_base", lambda project, base, cache_dir: builds.append(base))
    return builds


def test_the_base_is_asked_only_for_the_figures_of_the_models_it_scored(tmp_path, monkeypatch):
    builds = base_in_cache(tmp_path, monkeypatch, ("scratch", "concise"), ("scratch", "concise"))
    scores, figures = pr_report.base_side(tmp_path, "b")
    assert list(scores) == ["scratch", "concise"] and builds == []
    assert figures == {"scratch_curves.png": b"scratch curves", "concise_curves.png": b"concise curves",
                       "confusion_scratch.png": b"scratch confusion", "confusion_concise.png": b"concise confusion"}


def test_a_missing_figure_of_a_model_the_base_scored_builds_it_and_then_fails(tmp_path, monkeypatch):
    builds = base_in_cache(tmp_path, monkeypatch, ("scratch", "concise", "baseline"), ("scratch", "concise"))
    with pytest.raises(pr_report.ReportError) as error:
        pr_report.base_side(tmp_path, "b")
    assert str(error.value) == "the base b holds no reports/eval/confusion_png/baseline.png even after building it"
    assert builds == ["b"]


def test_the_out_folder_may_be_new_or_an_earlier_report_only(tmp_path):
    pr_report.check_out_dir(tmp_path / "new")
    earlier = tmp_path / "pr"
    earlier.mkdir()
    pr_report.check_out_dir(earlier)  # empty
    for name in ("report.md", "comment.md", "base-scratch_curves.png", "head-confusion_baseline.png"):
        (earlier / name).write_bytes(b"x")
    pr_report.check_out_dir(earlier)
    (earlier / "notes.txt").write_text("mine")
    with pytest.raises(pr_report.ReportError, match=r"^--out .*/pr holds notes.txt, which are not a PR report's"):
        pr_report.check_out_dir(earlier)
    (earlier / "notes.txt").unlink()
    (earlier / "head-figures").mkdir()  # a folder, even one named like a figure
    with pytest.raises(pr_report.ReportError, match="holds head-figures, which"):
        pr_report.check_out_dir(earlier)
    with pytest.raises(pr_report.ReportError, match=r"^--out .*/report.md is a file; name a folder"):
        pr_report.check_out_dir(earlier / "report.md")


def test_outs_within_tolerance_are_reported_as_such_and_any_drift_as_drift():
    from pipeline.ci.tolerance import DRIFT, IDENTICAL, WITHIN, OutCheck, Verdict

    same, near = OutCheck("train", "models/a.pt", Verdict(IDENTICAL)), OutCheck("train", "models/b.pt", Verdict(WITHIN))
    assert pr_report.reproduction([], [same]) == "the workspace holds the committed outs (1 identical, 0 within " \
                                                 "tolerance, 0 drift)"
    assert pr_report.reproduction([near.line()], [same, near]) == (
        "within tolerance (1 identical, 1 within tolerance, 0 drift): within tolerance: models/b.pt (out of train)")
    gap = "drift: extra.txt is an out of stage use in dvc.yaml but not in dvc.lock"
    assert pr_report.reproduction([near.line(), gap], [same, near]).startswith(f"{DRIFT} (1 identical")


def test_a_base_that_names_no_revision_is_one_line_saying_so(tmp_path, monkeypatch):
    import signal

    from click.testing import CliRunner

    env = clean_env()
    run(["git", "init", "-q"], tmp_path, env)
    run(["git", "commit", "-q", "--allow-empty", "-m", "first"], tmp_path, env)
    monkeypatch.chdir(tmp_path)
    previous = signal.getsignal(signal.SIGTERM)  # stage_main takes SIGTERM over for the process
    try:
        result = CliRunner().invoke(pr_report.main, ["--base", "nope"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [f"pr-report: error: --base nope: no such revision in {tmp_path} (a branch, "
                                          "tag or commit)"]
