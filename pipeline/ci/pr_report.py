"""What a change did to the pipeline, as Markdown for a pull request: `python -m pipeline.ci.pr_report --base main`.

Compares the base revision with the workspace (the head, built by
`dvc repro`): the params that changed, every metric of every model with its
change and whether the champion would change, the training curves and the
confusion matrices of both side by side (a gap where one side scored a model
the other did not), whether the committed dvc.lock is current (lock_check)
and whether the workspace reproduces it (identical, within tolerance, or
drift, as reproduce_check judges).

The base's outputs are read from the DVC cache through the base's dvc.lock.
Where the cache lacks them (a CI runner that pulled nothing), the base is
rebuilt in a temporary clone that shares this project's cache.

Writes OUT/report.md and the figures beside it (base-*.png, head-*.png), and
OUT/comment.md, the same without the figures (what a job summary or a pull
request comment shows: images linked beside a file render nowhere there), all
renamed into place together. Nothing leaves the machine: posting the report
is the CI job's business.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from pipeline import paths
from pipeline._cli import stage_main, verbose_option
from pipeline.ci import lock_check, reproduce_check
from pipeline.ci.dvc_files import CheckError
from pipeline.ci.tolerance import DRIFT, WITHIN, DvcCache
from softmax_regression.atomic import StagedOutputs
from softmax_regression.evaluation.metrics import best_by_validation, read_scores_json
from softmax_regression.models import CHAPTER_KINDS, MODEL_KINDS

log = logging.getLogger(__name__)

METRICS = ("test_accuracy", "test_loss", "macro_f1", "val_accuracy", "test_ece", "test_mce", "test_brier",
           "temperature", "test_ece_calibrated")
"""Every metric evaluate writes per model, in the report's order."""


class ReportError(RuntimeError):
    """The report cannot be made: no such base revision, outputs that cannot be found or built."""


@dataclass(frozen=True)
class Side:
    """What the report shows of one revision: its metrics file and its figures (by report file name)."""

    name: str
    """``base`` or ``head``: the prefix of its figures' files."""
    revision: str
    scores: dict[str, dict]
    figures: dict[str, bytes]


def figure_paths(kinds: tuple[str, ...]) -> dict[str, str]:
    """Report file name -> the pipeline output it shows."""
    figures = {f"{kind}_curves.png": paths.curves_path(kind).as_posix() for kind in CHAPTER_KINDS}
    figures |= {f"confusion_{kind}.png": (paths.CONFUSION_PNG_DIR / f"{kind}.png").as_posix() for kind in kinds}
    return figures


def scored(scores: dict[str, dict]) -> tuple[str, ...]:
    """The models a side's metrics file scores, in :data:`MODEL_KINDS` order: those whose figures it has."""
    return tuple(kind for kind in MODEL_KINDS if kind in scores)


def dvc_json(project: Path, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=project, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise ReportError(f"dvc {' '.join(args)} failed: {result.stderr.strip() or 'no output'}")
    return json.loads(result.stdout or "{}")


def read_from_cache(cache: DvcCache, outs: dict[str, str], path: str) -> bytes | None:
    """The bytes of ``path`` (an out, or a file inside a directory out) as ``outs`` records them."""
    if path in outs:
        return cache.read(outs[path])
    for out, md5 in outs.items():
        if path.startswith(out + "/"):
            listing = cache.listing(md5) if md5.endswith(".dir") else None
            inside = (listing or {}).get(path[len(out) + 1:])
            return cache.read(inside) if inside else None
    return None


def cached_side(cache: DvcCache, outs: dict[str, str]) -> tuple[dict[str, dict], dict[str, bytes], list[str]]:
    """The scores and the figures (by report file name) of a revision whose outs are ``outs``, from ``cache``,
    and the paths the cache lacks: the metrics file first, as it names the models whose figures there are."""
    metrics = read_from_cache(cache, outs, paths.EVAL_METRICS.as_posix())
    if metrics is None:
        return {}, {}, [paths.EVAL_METRICS.as_posix()]
    # a base from before calibration holds accuracies only: gaps in the table, as the race needs no more
    scores = read_scores_json(metrics.decode(), required=("val_accuracy",))
    wanted = figure_paths(scored(scores))
    found = {name: read_from_cache(cache, outs, path) for name, path in wanted.items()}
    return (scores, {name: data for name, data in found.items() if data is not None},
            [wanted[name] for name, data in found.items() if data is None])


def base_side(project: Path, base: str) -> tuple[dict[str, dict], dict[str, bytes]]:
    """The base's scores and the figures of the models it scored, as the base's dvc.lock records them, from the
    cache; the base is built in a temporary clone sharing the cache first where the cache lacks any of them."""
    cache = reproduce_check.dvc_cache(project)
    outs = reproduce_check.out_hashes(reproduce_check.git(["show", f"{base}:dvc.lock"], project),
                                      f"the dvc.lock of {base}")
    scores, figures, missing = cached_side(cache, outs)
    if missing:
        log.info("the cache lacks the base's %s: building %s in a temporary clone", ", ".join(missing), base)
        build_base(project, base, cache.directory)
        scores, figures, missing = cached_side(cache, outs)
    if missing:
        raise ReportError(f"the base {base} holds no {', '.join(missing)} even after building it")
    return scores, figures


def build_base(project: Path, base: str, cache_dir: Path) -> None:
    """`dvc repro` of revision ``base`` in a temporary clone whose DVC cache is ``cache_dir``: a stage whose
    inputs the head shares (fetch and preprocess, often) comes back from the run cache instead of running."""
    with tempfile.TemporaryDirectory(prefix="pr-report-") as tmp:
        workdir = Path(tmp)
        clone = workdir / "base"
        reproduce_check.git(["clone", "--quiet", "--no-hardlinks", str(project), str(clone)], project)
        reproduce_check.git(["checkout", "--quiet", base], clone)
        env = reproduce_check.check_environment(workdir, clone)
        subprocess.run([sys.executable, "-m", "dvc", "cache", "dir", "--local", str(cache_dir)], cwd=clone, env=env,
                       check=True, capture_output=True)
        reproduce_check.repro(clone, env, workdir / "repro.log", force=False)


def metrics_rows(base: dict[str, dict], head: dict[str, dict]) -> list[tuple[str, str, float | None, float | None]]:
    """``(model, metric, base, head)`` for every model and metric either side has."""
    rows = []
    for kind in MODEL_KINDS:
        if kind not in base and kind not in head:
            continue
        for metric in METRICS:
            rows.append((kind, metric, base.get(kind, {}).get(metric), head.get(kind, {}).get(metric)))
    return rows


def champion_line(base: dict[str, dict], head: dict[str, dict]) -> str:
    """Which model the champion race picks on each side, and whether the head's would take the title
    (``@champion`` moves only to a strictly better validation accuracy)."""
    def best(scores: dict[str, dict]) -> tuple[str, float]:
        name = best_by_validation({kind: values["val_accuracy"] for kind, values in scores.items()})
        return name, scores[name]["val_accuracy"]

    (base_name, base_acc), (head_name, head_acc) = best(base), best(head)
    verdict = ("the champion would change to the head's" if head_acc > base_acc
               else "the champion would stay the base's")
    return (f"Best on validation: base {base_name} ({base_acc:.4f}), head {head_name} ({head_acc:.4f}): "
            f"{verdict} {head_name if head_acc > base_acc else base_name}.")


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def change(base: float | None, head: float | None) -> str:
    if base is None or head is None:
        return "-"
    return "0" if head == base else f"{head - base:+.4f}"


def render(params: dict, base: Side, head: Side, lock_lines: list[str], reproduced: str,
           figures: bool = True) -> str:
    """The report's Markdown; the figures are linked as the files beside it, or (``figures`` off) left out."""
    lines = [f"# Pipeline report: {base.revision} -> {head.revision}", "",
             f"Base `{base.revision}`, head `{head.revision}` (the workspace, as built).", "",
             "## Reproducibility", ""]
    lines.append("- lock check: " + ("dvc.lock matches the code, params and commands of every stage" if not lock_lines
                                     else "dvc.lock is stale: " + "; ".join(lock_lines)))
    lines += [f"- rebuild: {reproduced}", "", "## Params", ""]
    changed = [(name, values.get("old"), values.get("new"))
               for file_params in params.values() for name, values in sorted(file_params.items())]
    if changed:
        lines += ["| param | base | head |", "|---|---|---|"]
        lines += [f"| `{name}` | {json.dumps(old)} | {json.dumps(new)} |" for name, old, new in changed]
    else:
        lines.append("No param changed.")
    lines += ["", "## Metrics", "", "| model | metric | base | head | change |", "|---|---|---|---|---|"]
    lines += [f"| {kind} | {metric} | {number(b)} | {number(h)} | {change(b, h)} |"
              for kind, metric, b, h in metrics_rows(base.scores, head.scores)]
    lines += ["", champion_line(base.scores, head.scores)]
    if figures:
        lines += ["", "## Figures", "", "| base | head |", "|---|---|"]
        lines += [f"| {figure_cell(base, name)} | {figure_cell(head, name)} |"
                  for name in figure_paths(MODEL_KINDS) if name in base.figures or name in head.figures]
    return "\n".join(lines) + "\n"


def figure_cell(side: Side, name: str) -> str:
    """The figure ``name`` of ``side`` as the file beside the report, or a gap where that side scored no such model."""
    return f"![{side.name} {name}]({side.name}-{name})" if name in side.figures else f"(not in the {side.name})"


REPORT_FILES = ("report.md", "comment.md")
"""The report with its figures, and without them (for a job summary or a comment)."""


def check_out_dir(out: Path) -> None:
    """The report replaces the whole of ``out``: a folder that holds anything but an earlier report
    (:data:`REPORT_FILES`, ``base-*`` and ``head-*`` figures) is refused before any work, so ``--out reports``
    loses nothing."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ReportError(f"--out {out} is a file; name a folder for the report")
    foreign = sorted(p.name for p in out.iterdir()
                     if not (p.is_file() and (p.name in REPORT_FILES or p.name.startswith(("base-", "head-")))))
    if foreign:
        raise ReportError(f"--out {out} holds {', '.join(foreign[:3])}{' and more' if len(foreign) > 3 else ''}, "
                          "which are not a PR report's, and the report replaces the folder: name a new or empty one")


def reproduction(differing: list[str], checks: list) -> str:
    """What the report says of the workspace against the committed dvc.lock (``reproduce_check.check_rebuilt``):
    the worst outcome of its lines first, so outs within tolerance are not called drift."""
    counted = reproduce_check.summary(checks)
    if not differing:
        return f"the workspace holds the committed outs ({counted})"
    worst = DRIFT if any(line.startswith(DRIFT) for line in differing) else WITHIN
    return f"{worst} ({counted}): " + "; ".join(differing)


@click.command(help=__doc__)
@click.option("--base", "base_rev", default="main", show_default=True, help="The revision to compare against.")
@click.option("--out", "out_dir", default="reports/pr", show_default=True, type=click.Path(file_okay=False),
              help="The folder report.md, its figures and comment.md go to (replaced whole: new, or an earlier "
                   "report).")
@verbose_option
@stage_main("pr-report", pinned=False)
def main(base_rev: str, out_dir: str) -> None:
    project = Path.cwd()
    check_out_dir(Path(out_dir))
    try:
        base_commit = reproduce_check.git(["rev-parse", "--verify", "--quiet", f"{base_rev}^{{commit}}"],
                                          project).strip()
    except CheckError:
        raise ReportError(f"--base {base_rev}: no such revision in {project} (a branch, tag or commit)") from None
    head_commit = reproduce_check.git(["rev-parse", "HEAD"], project).strip()
    lock_lines = lock_check.check(project)
    differing, checks = reproduce_check.check_rebuilt(project, project)

    head_scores = paths.read_output(paths.EVAL_METRICS, read_scores_json, "evaluate")
    base_scores, base_figures = base_side(project, base_commit)
    base_label = base_commit[:12] if base_commit.startswith(base_rev) else f"{base_rev} ({base_commit[:12]})"
    base = Side("base", base_label, base_scores, base_figures)
    head = Side("head", head_commit[:12], head_scores,
                {name: Path(path).read_bytes() for name, path in figure_paths(scored(head_scores)).items()})
    params = dvc_json(project, "params", "diff", base_commit)
    reproduced = reproduction(differing, checks)

    page, comment = (render(params, base, head, lock_lines, reproduced, figures) for figures in (True, False))
    with StagedOutputs() as outputs:
        folder = outputs.directory(Path(out_dir))
        for side in (base, head):
            for name, png in side.figures.items():
                (folder / f"{side.name}-{name}").write_bytes(png)
        (folder / "report.md").write_text(page)
        (folder / "comment.md").write_text(comment)
        outputs.commit()
    log.info("wrote %s/report.md (%d figures)", out_dir, len(base.figures) + len(head.figures))


if __name__ == "__main__":
    main()
