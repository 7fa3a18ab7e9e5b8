"""Check, without training anything, that dvc.lock is current: the code, the params and the stage
commands it records are the ones in the workspace, so `dvc repro` would rerun nothing for them.

It asks `dvc status` and keeps what concerns the committed definition of the
pipeline: changed code files (git-tracked deps), changed params, changed
commands, stages missing from dvc.lock. Data and models (the outs, and deps
that are some stage's outs) are ignored, so it runs in a fresh clone with
nothing pulled or built.

Exit 0 when dvc.lock is current; exit 1 with one line per changed path,
naming it and the stages that depend on it (refresh with `dvc repro` and
commit dvc.lock); exit 2 when the check cannot run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import click

from pipeline.ci.dvc_files import CheckError, declared_outs, read_lock, read_stages, unlocked

EXIT_CURRENT = 0
EXIT_STALE = 1
EXIT_ERROR = 2


def stage_outs(stages: dict) -> set[str]:
    """Every path dvc.yaml's ``stages`` declare as an out, metric or plot."""
    return set().union(*map(declared_outs, stages.values()))


def dvc_status(project: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=project, capture_output=True,
                            text=True)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        errors = [line for line in output if line.startswith("ERROR")] or output[-1:] or ["no output"]
        raise CheckError(f"`dvc status` failed: {errors[0]}")
    try:
        return json.loads(result.stdout or "{}")
    except ValueError:
        raise CheckError(f"`dvc status --json` printed no JSON: {result.stdout[:200]!r}") from None


def is_data(path: str, data_paths: set[str]) -> bool:
    """An out of some stage, or a path inside one."""
    return any(path == out or path.startswith(out.rstrip("/") + "/") for out in data_paths)


def stale_entries(status: dict, data_paths: set[str], locked: set[str] | None = None) -> dict[str, list[str]]:
    """``{what changed: [stages]}`` for everything but data: code, params, commands.

    Stages missing from dvc.lock (``locked``) are left out: DVC calls every
    dep of such a stage modified, and the stage itself is reported instead.
    """
    changed: dict[str, list[str]] = defaultdict(list)
    for stage, entries in status.items():
        if locked is not None and stage not in locked:
            continue
        for entry in entries:
            if isinstance(entry, str):  # "changed command", "always changed", ...
                changed[f"{entry} of stage {stage}"].append(stage)
                continue
            for path, state in (entry.get("changed deps") or {}).items():
                if is_data(path, data_paths):
                    continue
                if isinstance(state, dict):  # a params file: {"train.lr": "modified"}
                    for key, how in state.items():
                        changed[f"{path}: {key} ({how})"].append(stage)
                else:
                    changed[f"{path} ({state})"].append(stage)
    return dict(changed)


def check(project: Path) -> list[str]:
    """One line per stale entry of dvc.lock; none when it is current."""
    if not (project / "dvc.yaml").is_file():
        raise CheckError(f"{project} has no dvc.yaml")
    if not (project / "dvc.lock").is_file():
        raise CheckError(f"{project} has no dvc.lock: run `dvc repro` and commit it")
    locked, defined = read_lock(project / "dvc.lock"), read_stages(project / "dvc.yaml")
    lines = [f"stale: {gap}" for gap in unlocked(defined, locked)]
    for what, stages in sorted(stale_entries(dvc_status(project), stage_outs(defined), set(locked)).items()):
        lines.append(f"stale: {what}; reruns {', '.join(sorted(set(stages)))}")
    return lines


@click.command(help=__doc__)
@click.option("--project", "project_dir", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="The project's directory (holding dvc.yaml).")
def main(project_dir: str) -> None:
    try:
        lines = check(Path(project_dir))
    except CheckError as exc:
        click.echo(f"lock-check: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    for line in lines:
        click.echo(line)
    if lines:
        click.echo(f"lock-check: dvc.lock is stale ({len(lines)} change(s)); run `dvc repro` and commit dvc.lock",
                   err=True)
        sys.exit(EXIT_STALE)
    click.echo("lock-check: dvc.lock matches the code, params and commands of every stage")


if __name__ == "__main__":
    main()
