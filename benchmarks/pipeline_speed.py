"""Pipeline speed: what a user waits for, on this machine, against the project's targets.

In a temporary clone of the project's committed HEAD (this virtualenv, the
data from the system copy, a fresh DVC cache and MLflow store of its own), it
times four `dvc repro` runs, wall clock:

\b
  cold      everything runs (empty cache, empty MLflow store)
  no-op     nothing changed: nothing runs
  train.lr  0.1 -> 0.05: both train stages, evaluate and report rerun
  report.*  report.n_images 18 -> 9: report reruns

and, for every stage process of the cold run, its wall time and its peak RSS
as the kernel counts it (getrusage of the process itself, read as it exits,
by a sitecustomize module put on the stages' import path, at os._exit or atexit). One table, with a
column saying whether each row meets its target.

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
MB = 1024 * 1024

TARGETS_S = {"train_scratch": 5.0, "train_concise": 5.0, "evaluate": 4.0, "report": 4.0}
TARGET_RSS_MB = 1200.0
SCENARIO_TARGETS_S = {"cold": 40.0, "no-op": 2.0, "train.lr": 20.0, "report.*": 6.0}
"""report.*: the report stage's 4 s plus the no-op's 2 s of DVC's own work."""

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
    with open(os.environ["PIPELINE_SPEED_LOG"], "a") as log:
        log.write(json.dumps({"argv": sys.argv, "wall_s": wall, "maxrss_kb": usage.ru_maxrss}) + "\\n")

if os.environ.get("PIPELINE_SPEED_LOG"):
    atexit.register(_record)
    _exit = os._exit

    def _recorded_exit(code):  # stages leave by os._exit, skipping atexit
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
        target = SCENARIO_TARGETS_S[name]
        rows.append(Row(f"dvc repro, {name} ({len(ran)} stage(s) ran)", wall, None, f"<= {target:.0f} s",
                        wall <= target))
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
                    rows.append(Row(f"  stage {stage}", float("nan"), None, "(not measured)", None))
                    continue
                rss = record["maxrss_kb"] / 1024
                limit = TARGETS_S.get(stage)
                target = (f"<= {limit:.0f} s, " if limit else "") + f"<= {TARGET_RSS_MB:.0f} MB"
                rows.append(Row(f"  stage {stage}", record["wall_s"], rss, target,
                                (limit is None or record["wall_s"] <= limit) and rss <= TARGET_RSS_MB))
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
    misses = [r.what.strip() for r in rows if r.meets is False]
    click.echo(f"{len(rows) - len(misses)} of {len(rows)} rows meet their target"
               + (f"; missed: {', '.join(misses)}" if misses else ""))


if __name__ == "__main__":
    main()
