"""Rebuild the pipeline from a clean clone and check that it writes exactly the committed dvc.lock.

It clones the project's committed HEAD into a temporary directory (uncommitted
changes are not part of it), runs `dvc repro` there with an empty DVC cache,
MLflow pointed at a temporary SQLite store (your own store is left alone) and
the clone's own code first on the import path, and compares the dvc.lock it
writes with the committed one, entry by entry: every stage's command, the
hash of every dep and out, every param. Then `git status --porcelain` in the
clone must be empty.

This is the strong reproducibility check for CI: code, params and data
determine every output, byte for byte, on any machine and in any directory.
(`python -m pipeline.lock_check` is the cheap one: no training.)

Exit 0 when the rebuild matches; exit 1 with one line per differing entry,
naming its path and stage; exit 2 when the check could not run (not a git
repository, no committed dvc.lock, a `dvc repro` that failed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

EXIT_IDENTICAL = 0
EXIT_DRIFT = 1
EXIT_ERROR = 2

STAGE_RAN = re.compile(r"Running stage '([\w@.-]+)'")


class CheckError(RuntimeError):
    """The check could not be carried out (as opposed to: it ran and found drift)."""


def git(args: list[str], cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout


def git_root(path: Path) -> Path:
    result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckError(f"{path} is not inside a git repository")
    return Path(result.stdout.strip())


def clone(root: Path, dest: Path) -> Path:
    """A clone of ``root``'s committed HEAD at ``dest``, holding a committed dvc.lock."""
    git(["clone", "--quiet", "--no-hardlinks", str(root), str(dest)], root.parent)
    if not (dest / "dvc.yaml").is_file():
        raise CheckError(f"{root} has no committed dvc.yaml")
    if not (dest / "dvc.lock").is_file():
        raise CheckError(f"{root} has no committed dvc.lock: run `dvc repro` and commit it")
    return dest


def shorten(kind: str, value: str) -> str:
    """Hashes shortened to 16 characters; commands and param values whole."""
    return value[:16] if kind in ("dep", "out") else value


def lock_entries(lock_text: str) -> dict[tuple[str, str, str], str]:
    """``{(stage, kind, path or key): hash or value}`` for every entry of a dvc.lock."""
    lock = yaml.safe_load(lock_text) or {}
    entries: dict[tuple[str, str, str], str] = {}
    for stage, body in (lock.get("stages") or {}).items():
        entries[(stage, "cmd", "")] = str(body.get("cmd"))
        for kind in ("deps", "outs"):
            for item in body.get(kind) or []:
                digest = item.get("md5") or item.get("etag") or item.get("checksum") or json.dumps(item, sort_keys=True)
                entries[(stage, kind[:-1], item["path"])] = str(digest)
        for params_file, values in (body.get("params") or {}).items():
            for key, value in (values or {}).items():
                entries[(stage, "param", f"{params_file}:{key}")] = json.dumps(value, sort_keys=True)
    return entries


def lock_drift(committed: str, rebuilt: str) -> list[str]:
    """One line per dvc.lock entry that differs, naming its path (or param, or command) and stage."""
    before, after = lock_entries(committed), lock_entries(rebuilt)
    lines = []
    for stage, kind, name in sorted(set(before) | set(after)):
        a, b = before.get((stage, kind, name)), after.get((stage, kind, name))
        if a == b:
            continue
        what = f"command of {stage}" if kind == "cmd" else f"{name} ({kind} of {stage})"
        if a is None:
            lines.append(f"drift: {what}: not in the committed dvc.lock")
        elif b is None:
            lines.append(f"drift: {what}: not written by the rebuild")
        else:
            lines.append(f"drift: {what}: committed {shorten(kind, a)}, rebuilt {shorten(kind, b)}")
    return lines


def check_environment(workdir: Path, project: Path) -> dict[str, str]:
    """The stages' environment: this interpreter's bin first on PATH, the clone's own code first on the
    import path, telemetry off, MLflow in ``workdir``; the DVC_* of an enclosing `dvc exp run` and the
    caller's MLFLOW_* (a registry, a run, an experiment of their own) dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(project / "src"), env.get("PYTHONPATH")])),
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
    )
    return env


def stages(project: Path) -> list[str]:
    spec = yaml.safe_load((project / "dvc.yaml").read_text()) or {}
    return list(spec.get("stages") or {})


def repro(project: Path, env: dict[str, str], log: Path) -> list[str]:
    """Run `dvc repro --force` (output to ``log``); returns the stages it ran.

    ``--force``: in a clean clone every stage runs anyway, except where DVC's
    run cache, filled by an earlier stage of the same rebuild with the same
    bytes, would restore a stage instead of running it.
    """
    with open(log, "w") as handle:
        result = subprocess.run([sys.executable, "-m", "dvc", "repro", "--force"], cwd=project, env=env,
                                stdout=handle, stderr=subprocess.STDOUT)
    output = log.read_text(errors="replace")
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise CheckError(f"`dvc repro` failed with exit code {result.returncode}:\n{tail}")
    return STAGE_RAN.findall(output)


def run_check(root: Path, workdir: Path, say=lambda message: None) -> list[str]:
    """Clone ``root`` into ``workdir``, rebuild there; the drift lines (none when it matches)."""
    project = clone(root, workdir / "project")
    committed = (project / "dvc.lock").read_text()
    commit = git(["rev-parse", "HEAD"], project).strip()
    say(f"dvc repro in a clean clone of {commit[:12]} at {project}")
    ran = repro(project, check_environment(workdir, project), workdir / "repro.log")
    skipped = [stage for stage in stages(project) if stage not in ran]
    if skipped:
        tail = "\n".join((workdir / "repro.log").read_text(errors="replace").splitlines()[-20:])
        raise CheckError(f"the rebuild did not execute stage(s) {', '.join(skipped)}:\n{tail}")
    lines = lock_drift(committed, (project / "dvc.lock").read_text())
    dirty = [line.strip() for line in git(["status", "--porcelain"], project).splitlines() if line.strip()]
    if lines:  # a modified dvc.lock is itemised above already
        dirty = [line for line in dirty if line.split()[-1] != "dvc.lock"]
    return lines + [f"dirty: `git status` after the rebuild: {line}" for line in dirty]


@click.command(help=__doc__)
@click.option("--project", "project_dir", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="A directory inside the project's git repository.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (clone, log, MLflow store) and print its path.")
def main(project_dir: str, keep: bool) -> None:
    def say(message: str) -> None:
        click.echo(f"reproduce-check: {message}", err=True)

    workdir = Path(tempfile.mkdtemp(prefix="reproduce-check-"))
    try:
        lines = run_check(git_root(Path(project_dir).resolve()), workdir, say)
    except CheckError as exc:
        click.echo(f"reproduce-check: error: {exc}", err=True)
        code = EXIT_ERROR
    else:
        for line in lines:
            click.echo(line)
        if lines:
            click.echo(f"reproduce-check: the rebuild differs from the committed dvc.lock ({len(lines)} line(s))",
                       err=True)
            code = EXIT_DRIFT
        else:
            click.echo("reproduce-check: a clean clone rebuilds the committed dvc.lock exactly; git status is clean")
            code = EXIT_IDENTICAL
    finally:
        if keep:
            click.echo(f"reproduce-check: kept {workdir}", err=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
