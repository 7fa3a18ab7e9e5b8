"""Rebuild the pipeline from a clean clone and check how close it comes to the committed dvc.lock.

It clones the project's committed HEAD into a temporary directory (uncommitted
changes are not part of it), runs `dvc repro` there with an empty DVC cache,
MLflow pointed at a temporary SQLite store (your own store is left alone) and
the clone's own code first on the import path, and compares the dvc.lock it
writes with the committed one, entry by entry: every stage's command, the
hash of every dep and out, every param. Then `git status --porcelain` in the
clone must be empty.

Each out is one of three: identical bytes (what every x86-64 CPU gives, with
the pinned kernels); within tolerance (the same model and results up to
rounding, as another architecture or a GPU gives them: the tolerances are
pipeline/ci/tolerance.py's); or drift. Judging a difference needs the committed
bytes: they are read from the project's DVC cache (`dvc pull` fills it from
a remote). A rebuild on x86-64 must be identical (--tolerant accepts "within
tolerance" there too); elsewhere, and for --rebuilt, tolerance is the default.

With --rebuilt DIR it rebuilds nothing and judges the outs found in DIR (a
workspace built elsewhere, say a CI runner's) against the committed dvc.lock.

Exit 0 when every out is identical or within tolerance (and nothing else
differs); exit 1 with one line per differing out, command, param or code
file, naming its path and stage; exit 2 when the check could not run (not a
git repository, no committed dvc.lock, a `dvc repro` that failed).
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

from pipeline.ci.dvc_files import CheckError, parse_lock, parse_stages, read_stages, unlocked
from pipeline.ci.tolerance import DRIFT, IDENTICAL, OUTCOMES, WITHIN, DvcCache, OutCheck, check_outs
from pipeline.kernels import portable_here
from softmax_regression.errors import one_line

EXIT_IDENTICAL = 0
EXIT_DRIFT = 1
EXIT_ERROR = 2

COMMITTED_LOCK, REBUILT_LOCK = "the committed dvc.lock", "the rebuilt dvc.lock"

STAGE_RAN = re.compile(r"Running stage '([\w@.-]+)'")


def git(args: list[str], cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        reason = one_line(result.stderr.strip()) if result.stderr.strip() else f"exit {result.returncode}"
        raise CheckError(f"git {' '.join(args)} failed in {cwd}: {reason}")
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


def lock_entries(lock_text: str, where: str = "dvc.lock") -> dict[tuple[str, str, str], str]:
    """``{(stage, kind, path or key): hash or value}`` for every entry of a dvc.lock (``where`` names it in the
    error when it is no mapping of stages)."""
    entries: dict[tuple[str, str, str], str] = {}
    for stage, body in parse_lock(lock_text, where).items():
        entries[(stage, "cmd", "")] = str(body.get("cmd"))
        for kind in ("deps", "outs"):
            for item in body.get(kind) or []:
                digest = item.get("md5") or item.get("etag") or item.get("checksum") or json.dumps(item, sort_keys=True)
                entries[(stage, kind[:-1], item["path"])] = str(digest)
        for params_file, values in (body.get("params") or {}).items():
            for key, value in (values or {}).items():
                entries[(stage, "param", f"{params_file}:{key}")] = json.dumps(value, sort_keys=True)
    return entries


def lock_differences(committed: str, rebuilt: str) -> list[tuple[str, str, str, str | None, str | None]]:
    """``(stage, kind, path or key, committed, rebuilt)`` for every dvc.lock entry that differs, sorted."""
    before, after = lock_entries(committed, COMMITTED_LOCK), lock_entries(rebuilt, REBUILT_LOCK)
    return [(stage, kind, name, before.get((stage, kind, name)), after.get((stage, kind, name)))
            for stage, kind, name in sorted(set(before) | set(after))
            if before.get((stage, kind, name)) != after.get((stage, kind, name))]


def drift_line(stage: str, kind: str, name: str, a: str | None, b: str | None) -> str:
    what = f"command of {stage}" if kind == "cmd" else f"{name} ({kind} of {stage})"
    if a is None:
        return f"drift: {what}: not in the committed dvc.lock"
    if b is None:
        return f"drift: {what}: not written by the rebuild"
    return f"drift: {what}: committed {shorten(kind, a)}, rebuilt {shorten(kind, b)}"


def lock_drift(committed: str, rebuilt: str) -> list[str]:
    """One line per dvc.lock entry that differs, naming its path (or param, or command) and stage."""
    return [drift_line(*difference) for difference in lock_differences(committed, rebuilt)]


def out_lines(checks: list[OutCheck], rebuilt_hashes: dict[str, str] | None = None,
              committed_hashes: dict[str, str] | None = None) -> list[str]:
    """One line per out that is not identical; a drifting one also shows both hashes when known."""
    lines = []
    for check in checks:
        if check.verdict.outcome == IDENTICAL:
            continue
        if check.verdict.outcome == DRIFT and rebuilt_hashes and check.path in rebuilt_hashes:
            line = drift_line(check.stage, "out", check.path, committed_hashes[check.path],
                              rebuilt_hashes[check.path])
            lines.append(f"{line}; {check.verdict.detail}" if check.verdict.detail else line)
        else:
            lines.append(check.line())
    return lines


def out_hashes(lock_text: str, where: str = "dvc.lock") -> dict[str, str]:
    return {path: digest for (stage, kind, path), digest in lock_entries(lock_text, where).items() if kind == "out"}


def dvc_cache(root: Path) -> DvcCache:
    """The project's DVC cache, wherever its config puts it (`dvc cache dir`)."""
    result = subprocess.run([sys.executable, "-m", "dvc", "cache", "dir"], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckError(f"`dvc cache dir` failed in {root}: {one_line(result.stderr.strip() or 'no output')}")
    return DvcCache(Path(result.stdout.strip()))


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


def repro(project: Path, env: dict[str, str], log: Path, force: bool = True) -> list[str]:
    """Run `dvc repro`, with ``--force`` unless told otherwise (output to ``log``); returns the stages it ran.

    ``--force``: in a clean clone every stage runs anyway, except where DVC's
    run cache, filled by an earlier stage of the same rebuild with the same
    bytes, would restore a stage instead of running it. Without ``force``, a
    stage whose run the cache holds, outs and all, is restored from it.
    """
    with open(log, "w") as handle:
        result = subprocess.run([sys.executable, "-m", "dvc", "repro", *(["--force"] if force else [])], cwd=project,
                                env=env, stdout=handle, stderr=subprocess.STDOUT)
    output = log.read_text(errors="replace")
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise CheckError(f"`dvc repro` failed with exit code {result.returncode}:\n{tail}")
    return STAGE_RAN.findall(output)


def run_check(root: Path, workdir: Path, say=lambda message: None) -> tuple[list[str], list[OutCheck]]:
    """Clone ``root`` into ``workdir`` and rebuild there; returns the lines to print (every out not
    identical, every other dvc.lock entry that differs, every `git status` line) and every out's check."""
    project = clone(root, workdir / "project")
    committed = (project / "dvc.lock").read_text()
    committed_stages = parse_lock(committed, COMMITTED_LOCK)  # before a rebuild that DVC would fail on
    commit = git(["rev-parse", "HEAD"], project).strip()
    say(f"dvc repro in a clean clone of {commit[:12]} at {project}")
    ran = repro(project, check_environment(workdir, project), workdir / "repro.log")
    skipped = [stage for stage in read_stages(project / "dvc.yaml") if stage not in ran]
    if skipped:
        tail = "\n".join((workdir / "repro.log").read_text(errors="replace").splitlines()[-20:])
        raise CheckError(f"the rebuild did not execute stage(s) {', '.join(skipped)}:\n{tail}")
    rebuilt = (project / "dvc.lock").read_text()
    checks = check_outs(committed_stages, project, dvc_cache(root))
    committed_outs, rebuilt_outs = out_hashes(committed, COMMITTED_LOCK), out_hashes(rebuilt, REBUILT_LOCK)
    # An out judged above is not also listed where a later stage depends on it.
    others = [drift_line(*d) for d in lock_differences(committed, rebuilt)
              if (d[1] != "out" or d[3] is None) and not (d[1] == "dep" and d[2] in committed_outs | rebuilt_outs)]
    lines = out_lines(checks, rebuilt_outs, committed_outs) + others
    dirty = [line.strip() for line in git(["status", "--porcelain"], project).splitlines() if line.strip()]
    if lines:  # a dvc.lock whose entries differ is itemised above; one that differs in form only stays dirty
        dirty = [line for line in dirty if line.split()[-1] != "dvc.lock"]
    return lines + [f"dirty: `git status` after the rebuild: {line}" for line in dirty], checks


def check_rebuilt(root: Path, rebuilt: Path) -> tuple[list[str], list[OutCheck]]:
    """Judge the outs found under ``rebuilt`` against the committed dvc.lock of ``root``."""
    committed = parse_lock(git(["show", "HEAD:dvc.lock"], root), COMMITTED_LOCK)
    defined = parse_stages(git(["show", "HEAD:dvc.yaml"], root), "the committed dvc.yaml")
    checks = check_outs(committed, rebuilt, dvc_cache(root))
    # an out dvc.lock does not record is judged by nothing above: the committed lock is stale
    return out_lines(checks) + [f"drift: {gap}" for gap in unlocked(defined, committed)], checks


def summary(checks: list[OutCheck]) -> str:
    counts = {outcome: sum(check.verdict.outcome == outcome for check in checks) for outcome in OUTCOMES}
    return ", ".join(f"{count} {outcome}" for outcome, count in counts.items())


@click.command(help=__doc__)
@click.option("--project", "project_dir", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="A directory inside the project's git repository.")
@click.option("--rebuilt", "rebuilt_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Rebuild nothing: judge the outs in this directory (a workspace built elsewhere).")
@click.option("--tolerant/--exact", default=None,
              help="Accept outs within tolerance (default: only for --rebuilt, or a rebuild off x86-64).")
@click.option("--keep", is_flag=True,
              help="Keep the temporary directory (clone, log, MLflow store) and print its path.")
def main(project_dir: str, rebuilt_dir: str | None, tolerant: bool | None, keep: bool) -> None:
    def say(message: str) -> None:
        click.echo(f"reproduce-check: {message}", err=True)

    workdir = Path(tempfile.mkdtemp(prefix="reproduce-check-"))
    try:
        root = git_root(Path(project_dir).resolve())
        if rebuilt_dir is None:
            lines, checks = run_check(root, workdir, say)
        else:
            lines, checks = check_rebuilt(root, Path(rebuilt_dir).resolve())
    except CheckError as exc:
        click.echo(f"reproduce-check: error: {exc}", err=True)
        code = EXIT_ERROR
    else:
        for line in lines:
            click.echo(line)
        if tolerant is None:  # the pinned kernels promise identical bytes on x86-64
            tolerant = rebuilt_dir is not None or not portable_here()
        drifting = [line for line in lines if not (tolerant and line.startswith(WITHIN))]
        what = "a clean clone's rebuild" if rebuilt_dir is None else rebuilt_dir
        if drifting:
            click.echo(f"reproduce-check: {what} differs from the committed dvc.lock ({len(drifting)} line(s); "
                       f"outs: {summary(checks)})", err=True)
            code = EXIT_DRIFT
        elif lines:
            click.echo(f"reproduce-check: {what} matches the committed dvc.lock within tolerance "
                       f"(outs: {summary(checks)})")
            code = EXIT_IDENTICAL
        elif rebuilt_dir is None:
            click.echo("reproduce-check: a clean clone rebuilds the committed dvc.lock exactly; git status is clean")
            code = EXIT_IDENTICAL
        else:
            click.echo(f"reproduce-check: {what} holds exactly the committed outs")
            code = EXIT_IDENTICAL
    finally:
        if keep:
            click.echo(f"reproduce-check: kept {workdir}", err=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
