"""`python -m pipeline.ci.pr_report`: two real commits of the project (the second lowers train.lr), the report
of the second against the first, its numbers against `dvc metrics diff` and its figures against the outputs."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from support import link_or_copy, run, set_param

FIGURES = {
    "scratch_curves.png": "reports/train/scratch_curves.png",
    "concise_curves.png": "reports/train/concise_curves.png",
    **{f"confusion_{kind}.png": f"reports/eval/confusion_png/{kind}.png" for kind in ("scratch", "concise", "baseline")},
}


@pytest.fixture(scope="module")
def two_commits(fault_project, tmp_path_factory):
    """A copy of the built and committed fast project (the base), then train.lr lowered, rebuilt and committed
    (the head). Returns the project and the base's figures as they were built."""
    project = Path(shutil.copytree(fault_project[0], tmp_path_factory.mktemp("pr-report") / "project",
                                   symlinks=True, copy_function=link_or_copy))
    assert run(["git", "status", "--porcelain"], project).stdout == ""
    base_figures = {name: (project / path).read_bytes() for name, path in FIGURES.items()}
    set_param(project, "train.lr", 0.05)
    run(["dvc", "repro"], project)
    run(["git", "commit", "-qam", "lower the learning rate"], project)
    return project, base_figures


@pytest.fixture(scope="module")
def page(two_commits) -> str:
    """The report of the head against the base, made once: each test reads its own part."""
    project, _ = two_commits
    result = run([sys.executable, "-m", "pipeline.ci.pr_report", "--base", "HEAD~1"], project, check=False)
    assert result.returncode == 0, result.stderr
    return (project / "reports/pr/report.md").read_text()


def metric_cells(page: str) -> dict[tuple[str, str], tuple[str, str, str]]:
    rows = re.findall(r"^\| (\w+) \| (\w+) \| ([-\d.]+) \| ([-\d.]+) \| ([-+\d.]+) \|$", page, re.M)
    return {(kind, metric): (base, head, change) for kind, metric, base, head, change in rows}


def test_the_metrics_are_dvc_metrics_diffs(two_commits, page):
    project, _ = two_commits
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--all", "--json"], project).stdout)
    expected = diff["reports/eval/metrics.json"]
    cells = metric_cells(page)
    assert len(cells) == len(expected) == 27  # 3 models x 9 metrics
    for key, values in expected.items():
        kind, metric = key.split(".")
        base, head, change = cells[(kind, metric)]
        assert float(base) == pytest.approx(values["old"], abs=5e-5)
        assert float(head) == pytest.approx(values["new"], abs=5e-5)
        assert float(change) == pytest.approx(values.get("diff", 0), abs=1e-4)
    assert "| `train.lr` | 0.1 | 0.05 |" in page
    assert "- lock check: dvc.lock matches" in page
    assert "- rebuild: the workspace holds the committed outs" in page
    assert re.search(r"Best on validation: base \w+ \(0\.\d{4}\), head \w+ \(0\.\d{4}\): the champion would", page)


def test_the_figures_are_the_base_and_head_outputs_side_by_side(two_commits, page):
    project, base_figures = two_commits
    out = project / "reports/pr"
    for name, path in FIGURES.items():
        assert (out / f"base-{name}").read_bytes() == base_figures[name], name
        assert (out / f"head-{name}").read_bytes() == (project / path).read_bytes(), name
        assert f"| ![base {name}](base-{name}) | ![head {name}](head-{name}) |" in page
    assert (out / "base-scratch_curves.png").read_bytes() != (out / "head-scratch_curves.png").read_bytes()


def test_a_base_missing_from_the_cache_is_built_in_a_clone(two_commits, tmp_path):
    """A CI runner that pulled nothing and built the head, as the workflows' reproduce job does: the cache holds
    the head's outs and none of the base's own (`dvc gc --workspace`), so the report builds the base in a clone
    sharing that cache, where the stages whose inputs the head shares come back from the run cache."""
    project, base_figures = two_commits
    copy = Path(shutil.copytree(project, tmp_path / "project", symlinks=True, copy_function=link_or_copy))
    run(["dvc", "gc", "--workspace", "--force"], copy)
    result = run([sys.executable, "-m", "pipeline.ci.pr_report", "--base", "HEAD~1"], copy, check=False)
    assert result.returncode == 0, result.stderr
    assert "building" in result.stderr
    for name in FIGURES:
        assert (copy / "reports/pr" / f"base-{name}").read_bytes() == base_figures[name], name


def test_an_out_folder_holding_anything_but_a_report_is_refused_and_kept(two_commits, page):
    """The report replaces its folder whole: `--out reports` (evaluate's and train's outputs inside) is refused
    before any work, in one line naming what the folder holds, and nothing in it changes."""
    project, _ = two_commits
    before = {p: p.read_bytes() for p in (project / "reports").rglob("*") if p.is_file()}
    result = run([sys.executable, "-m", "pipeline.ci.pr_report", "--base", "HEAD~1", "--out", "reports"], project,
                 check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "pr-report: error: --out reports holds data, eval, pr and more, which are not a PR report's, and the "
        "report replaces the folder: name a new or empty one"], result.stderr
    assert {p: p.read_bytes() for p in (project / "reports").rglob("*") if p.is_file()} == before
