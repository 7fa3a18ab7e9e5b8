"""Pipeline speed: what a user waits for, and what each stage adds to the imports it cannot avoid.

In a temporary clone of the project's committed HEAD (this virtualenv, the
data from the system copy, a fresh DVC cache and MLflow store of its own), it
times four `dvc repro` runs, wall clock:

\b
  cold      everything runs (empty cache, empty MLflow store)
  no-op     nothing changed: nothing runs
  train.lr  0.1 -> 0.05: both train stages, evaluate and report rerun
  report.*  report.n_images 18 -> 9: report reruns

and, for every stage process of the cold run, its wall time, the third-party
packages it loaded and its peak RSS as the kernel counts it (getrusage of the
process itself, read as it exits, by a sitecustomize module put on the
stages' import path, at os._exit or atexit). Each stage's wall time is then
set against the bare import of its packages (`python -c "import torch,
mlflow, ..."` with the same pinned kernels, the best of three, in the same
run): machines differ by 3x, the ratio much less. One table, with a column
saying whether each stage meets its goal (<= 1.3x, <= 1200 MB).

\b
    .venv/bin/python benchmarks/pipeline_speed.py          # make bench-pipeline
    .venv/bin/python benchmarks/pipeline_speed.py --keep   # keep the clone and its logs

A 2-core machine: anything else running skews it badly; the load average is
printed with the table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from pipeline import kernels  # noqa: E402

MB = 1024 * 1024

TARGET_RATIO = 1.3
"""A stage's wall time against the bare import of the packages it loads (``python -c "import torch, mlflow,
..."``, with the same pinned kernels, measured in the same run): what the stage adds to its imports."""
TARGET_RSS_MB = 1200.0
IMPORT_REPEATS = 3

SITECUSTOMIZE = '''
"""Benchmark probe: at exit, append this process's wall time and peak RSS (the kernel's rusage) to a log."""
import atexit, json, os, resource, sys, time

def _record():
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    wall = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    packages = sorted({name.split(".")[0] for name, module in list(sys.modules.items())
                       if "site-packages" in str(getattr(module, "__file__", "") or "")
                       and not name.startswith("_") and "." not in name})
    with open(os.environ["PIPELINE_SPEED_LOG"], "a") as log:
        log.write(json.dumps({"argv": sys.argv, "wall_s": wall, "maxrss_kb": usage.ru_maxrss,
                              "packages": packages}) + "\\n")

if os.environ.get("PIPELINE_SPEED_LOG"):
    atexit.register(_record)
    _exit = os._exit

    def _recorded_exit(code):  # a process leaving by os._exit skips atexit
        _record()
        _exit(code)

    os._exit = _recorded_exit
'''


@dataclass
class Row:
    what: str
    wall_s: float
    rss_mb: float | None
    target: str
    meets: bool | None


def verdict(rows: list[Row]) -> str:
    """How many of the rows with a target meet it (a stage not measured does not); the ``dvc repro`` rows time
    the whole pipeline and have no target of their own."""
    targeted = [r for r in rows if r.meets is not None]
    misses = [r.what.strip() for r in targeted if not r.meets]
    return (f"{len(targeted) - len(misses)} of {len(targeted)} stages meet their target"
            + (f"; missed: {', '.join(misses)}" if misses else ""))


def stage_of(argv: list[str], commands: dict[str, str]) -> str | None:
    """The stage whose command (``python -m pipeline x ...``) started a process with ``argv`` (as the
    launcher leaves it at exit: ``[<pipeline/x.py>, ...the stage's arguments]``)."""
    script = Path(argv[0]) if argv else Path()
    if script.parent.name != "pipeline":
        return None
    started = ["python", "-m", "pipeline", script.stem, *argv[1:]]
    return next((name for name, cmd in commands.items() if cmd.split() == started), None)


def stage_commands(project: Path) -> dict[str, str]:
    return {name: stage["cmd"] for name, stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].items()}


def set_param(project: Path, dotted: str, value) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    section, key = dotted.split(".")
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def environment(project: Path, probe_dir: Path, log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join([str(probe_dir), str(project / "src")]),
        DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_TRACKING_URI=f"sqlite:///{project.parent / 'mlflow.db'}",
        PIPELINE_SPEED_LOG=str(log),
    )
    return env


def repro(project: Path, env: dict[str, str], log: Path) -> tuple[float, list[str]]:
    """Wall seconds of one `dvc repro`, and the stages it ran."""
    start = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    if result.returncode != 0:
        raise click.ClickException(f"`dvc repro` failed ({log}):\n" + "\n".join(text.splitlines()[-20:]))
    return wall, re.findall(r"Running stage '([\w@.-]+)'", text)


def bare_import_s(packages: list[str], env: dict[str, str]) -> float:
    """Seconds of ``python -c "import <packages>"`` with the stages' pinned kernels (min of a few runs)."""
    env = kernels.pinned_environment({k: v for k, v in env.items() if k != "PIPELINE_SPEED_LOG"})
    times = []
    for _ in range(IMPORT_REPEATS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {', '.join(packages) or 'sys'}"], env=env, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def measure(workdir: Path, say) -> list[Row]:
    project = workdir / "project"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(PROJECT_ROOT), str(project)], check=True)
    probe_dir = workdir / "probe"
    probe_dir.mkdir()
    (probe_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    probe_log = workdir / "stages.jsonl"
    env = environment(project, probe_dir, probe_log)
    commands = stage_commands(project)
    rows = []

    scenarios = [("cold", None), ("no-op", None), ("train.lr", ("train.lr", 0.05)),
                 ("report.*", ("report.n_images", 9))]
    for name, change in scenarios:
        if change is not None:
            set_param(project, *change)
        say(f"dvc repro: {name}")
        probe_log.write_text("")
        wall, ran = repro(project, env, workdir / f"repro-{name.replace('*', 'x')}.log")
        rows.append(Row(f"dvc repro, {name} ({len(ran)} stage(s) ran)", wall, None, "", None))
        if name == "cold":
            stages = {}
            for line in probe_log.read_text().splitlines():
                record = json.loads(line)
                stage = stage_of(record["argv"], commands)
                if stage is not None:
                    stages[stage] = record
            for stage in commands:
                record = stages.get(stage)
                if record is None:
                    rows.append(Row(f"  stage {stage}", float("nan"), None, "(not measured)", False))
                    continue
                rss = record["maxrss_kb"] / 1024
                bare = bare_import_s(record["packages"], env)
                ratio = record["wall_s"] / bare
                rows.append(Row(f"  stage {stage}: {ratio:.2f}x the bare import of {len(record['packages'])} "
                                f"packages ({bare:.1f} s)", record["wall_s"], rss,
                                f"<= {TARGET_RATIO:g}x, <= {TARGET_RSS_MB:.0f} MB",
                                ratio <= TARGET_RATIO and rss <= TARGET_RSS_MB))
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| what | wall s | peak RSS MB | target | meets |", "|---|---:|---:|---|---|"]
    for r in rows:
        rss = f"{r.rss_mb:.0f}" if r.rss_mb is not None else ""
        meets = "" if r.meets is None else ("yes" if r.meets else "**no**")
        lines.append(f"| {r.what} | {r.wall_s:.1f} | {rss} | {r.target} | {meets} |")
    return "\n".join(lines)


@click.command(help=__doc__)
@click.option("--keep", is_flag=True, help="Keep the temporary clone, its logs and MLflow store; print the path.")
def main(keep: bool) -> None:
    def say(message: str) -> None:
        click.echo(f"pipeline-speed: {message}", err=True)

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-speed-"))
    try:
        rows = measure(workdir, say)
    finally:
        if keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    click.echo(f"load average before: {load}; after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
               f"{os.cpu_count()} cores")
    click.echo(table(rows))
    click.echo(verdict(rows))


if __name__ == "__main__":
    main()
