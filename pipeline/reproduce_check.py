"""Check that the pipeline reproduces itself: the same models and metrics, byte for byte, on a forced rerun.

In a temporary copy of the project (the files a clone would hold: git's tracked
files plus untracked files that are not ignored), with MLflow pointed at a
temporary SQLite store so your own store is left alone, it runs `dvc repro`,
records the SHA-256 of every model file (models/*.pt) and the content of every
DVC metrics file declared in dvc.yaml, reruns everything with
`dvc repro --force`, and compares.

Exit 0 with a one-line summary when both runs agree; exit 1 with one line per
drifted file, naming it; exit 2 when the check itself could not run (not a git
repository, a `dvc repro` that failed, a stage the second run did not execute).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

EXIT_IDENTICAL = 0
EXIT_DRIFT = 1
EXIT_ERROR = 2

MODEL_GLOB = "models/*.pt"
STAGE_RAN = re.compile(r"Running stage '([\w@.-]+)'")


class CheckError(RuntimeError):
    """The check could not be carried out (as opposed to: it ran and found drift)."""


@dataclass(frozen=True)
class Snapshot:
    """What one run produced: SHA-256 of each compared file, and the parsed content of the metrics files."""
    sha256: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def declared_metrics(project: Path) -> list[str]:
    """The metrics files dvc.yaml declares (``metrics:`` of each stage), relative to the project."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text()) or {}
    found = []
    for stage in (spec.get("stages") or {}).values():
        for entry in stage.get("metrics") or []:
            found.append(next(iter(entry)) if isinstance(entry, dict) else str(entry))
    return sorted(found)


def take_snapshot(project: Path) -> Snapshot:
    """Hash every model file and every declared metrics file of ``project`` (missing files are simply absent)."""
    sha256, metrics = {}, {}
    for path in sorted(project.glob(MODEL_GLOB)):
        if path.is_file():
            sha256[path.relative_to(project).as_posix()] = sha256_file(path)
    for rel in declared_metrics(project):
        path = project / rel
        if path.is_file():
            sha256[rel] = sha256_file(path)
            try:
                metrics[rel] = json.loads(path.read_text())
            except ValueError:  # not JSON: compared by its bytes only
                pass
    return Snapshot(sha256, metrics)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _metrics_difference(first: Any, second: Any) -> str:
    a, b = _flatten(first), _flatten(second)
    changes = [f"{key} {a.get(key, '(missing)')} -> {b.get(key, '(missing)')}"
               for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    return ", ".join(changes) if changes else "same values, different bytes"


def drift(first: Snapshot, second: Snapshot) -> list[str]:
    """One line per file that differs between the two runs, naming the file and how it differs."""
    lines = []
    for rel in sorted(set(first.sha256) | set(second.sha256)):
        a, b = first.sha256.get(rel), second.sha256.get(rel)
        if a == b:
            continue
        if b is None:
            lines.append(f"drift: {rel}: written by the first run only")
        elif a is None:
            lines.append(f"drift: {rel}: written by the second run only")
        elif rel in first.metrics and rel in second.metrics:
            lines.append(f"drift: {rel}: {_metrics_difference(first.metrics[rel], second.metrics[rel])}")
        else:
            lines.append(f"drift: {rel}: sha256 {a[:16]} != {b[:16]}")
    return lines


def project_files(root: Path) -> list[str]:
    """What a clone would hold: tracked files plus untracked files git does not ignore."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CheckError(f"{root} is not a git repository (git ls-files failed: "
                         f"{getattr(exc, 'stderr', '') or exc})") from None
    return [rel for rel in out.split("\0") if rel and (root / rel).is_file()]


def git_root(path: Path) -> Path:
    result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckError(f"{path} is not inside a git repository")
    return Path(result.stdout.strip())


def copy_project(root: Path, dest: Path) -> Path:
    """A committed git repository at ``dest`` holding the project's files, without DVC outs or caches."""
    files = project_files(root)
    if "dvc.yaml" not in files:
        raise CheckError(f"{root} has no dvc.yaml")
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    git = ["git", "-c", "user.name=reproduce-check", "-c", "user.email=reproduce-check@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "--no-verify", "-m", "reproduce-check copy"]):
        result = subprocess.run(git + args, cwd=dest, capture_output=True, text=True)
        if result.returncode != 0:
            raise CheckError(f"git {args[0]} failed in {dest}: {result.stderr.strip()}")
    return dest


def check_environment(workdir: Path) -> dict[str, str]:
    """The stages' environment: this interpreter's bin first on PATH, telemetry off, MLflow in ``workdir``.

    DVC_* variables of an enclosing `dvc exp run` are dropped, so the copy is its own project.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
    )
    return env


def stages(project: Path) -> list[str]:
    spec = yaml.safe_load((project / "dvc.yaml").read_text()) or {}
    return list(spec.get("stages") or {})


def repro(project: Path, env: dict[str, str], log: Path, *extra: str) -> list[str]:
    """Run `dvc repro` (output to ``log``); returns the stages it ran."""
    cmd = [sys.executable, "-m", "dvc", "repro", *extra]
    with open(log, "w") as handle:
        result = subprocess.run(cmd, cwd=project, env=env, stdout=handle, stderr=subprocess.STDOUT)
    output = log.read_text(errors="replace")
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise CheckError(f"`{' '.join(['dvc', 'repro', *extra])}` failed with exit code {result.returncode}:\n{tail}")
    return STAGE_RAN.findall(output)


def run_check(root: Path, workdir: Path, say=lambda message: None) -> tuple[Snapshot, Snapshot]:
    """Copy ``root`` into ``workdir``, run the pipeline twice there; the two snapshots."""
    project = copy_project(root, workdir / "project")
    env = check_environment(workdir)
    expected = stages(project)
    snapshots = []
    for number, extra in ((1, ()), (2, ("--force",))):
        say(f"run {number}: {' '.join(['dvc', 'repro', *extra])} in {project}")
        ran = repro(project, env, workdir / f"repro-{number}.log", *extra)
        skipped = [stage for stage in expected if stage not in ran]
        if skipped:
            raise CheckError(f"run {number} did not execute stage(s) {', '.join(skipped)}; "
                             f"see {workdir / f'repro-{number}.log'}")
        snapshots.append(take_snapshot(project))
    if not any(rel.startswith("models/") for rel in snapshots[0].sha256):
        raise CheckError(f"the pipeline wrote no model file matching {MODEL_GLOB}")
    return snapshots[0], snapshots[1]


@click.command(help=__doc__)
@click.option("--project", "project_dir", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="A directory inside the project's git repository.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (copy, logs, MLflow store) and print its path.")
def main(project_dir: str, keep: bool) -> None:
    def say(message: str) -> None:
        click.echo(f"reproduce-check: {message}", err=True)

    workdir = Path(tempfile.mkdtemp(prefix="reproduce-check-"))
    try:
        first, second = run_check(git_root(Path(project_dir).resolve()), workdir, say)
    except CheckError as exc:
        click.echo(f"reproduce-check: error: {exc}", err=True)
        code = EXIT_ERROR
    else:
        lines = drift(first, second)
        for line in lines:
            click.echo(line)
        if lines:
            click.echo(f"reproduce-check: {len(lines)} of {len(set(first.sha256) | set(second.sha256))} "
                       "file(s) differ between `dvc repro` and `dvc repro --force`", err=True)
            code = EXIT_DRIFT
        else:
            click.echo(f"reproduce-check: identical across `dvc repro` and `dvc repro --force`: "
                       f"{', '.join(sorted(first.sha256))}")
            code = EXIT_IDENTICAL
    finally:
        if keep:
            click.echo(f"reproduce-check: kept {workdir}", err=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
