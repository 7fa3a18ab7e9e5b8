"""Tuning speed: what a trial costs against its training, what a second worker adds, and the old 12-point grid
as DVC experiments against the same grid as an Optuna study.

In a temporary clone of the project's committed HEAD (this virtualenv, the data
from the system copy, its own DVC cache, MLflow store and study database), after
one `dvc repro`:

\b
  trials    one worker, then two, on a study of 10-epoch trials (random lr and weight decay, no
            pruning): each trial's wall (Optuna's start to end: sampling, its MLflow run, the
            training, the per-epoch logging) against its training alone (`training_seconds`),
            and the finished trials per minute of two workers against one's
  grid      the 12 points of the old params/sweep.yaml (per_pixel, cosine, 50 epochs, train.lr
            x train.weight_decay): before, as 12 queued DVC experiments on `dvc queue start -j 2`
            (what `make tune` ran); after, as a grid study on two workers (what `make tune` runs)

Times are wall clock; the ratios are measured side by side in one run, and the
load average is printed with them (a 2-core machine: anything else running
skews the two-worker numbers).

\b
    .venv/bin/python benchmarks/tuning_speed.py            # make bench-tune
    .venv/bin/python benchmarks/tuning_speed.py --no-grid  # the trial numbers only (no DVC queue)
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OLD_GRID = {"train.lr": [0.05, 0.1, 0.2], "train.weight_decay": [0.0, 0.0005, 0.001, 0.002]}
OLD_FIXED = {"data.normalize": "per_pixel", "train.schedule": "cosine", "train.epochs": 50}
TRIAL_EPOCHS = 10
TARGETS = {"trial wall / training": 1.5, "2 workers / 1 (trials per minute)": 1.8}


def environment(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "OPTUNA_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(project / "src"))
    return env


def sh(cmd: list[str], project: Path, env: dict[str, str]) -> str:
    result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd)} failed: {(result.stderr or result.stdout)[-2000:]}")
    return result.stdout


def write_search(project: Path, study: str, **spec) -> None:
    (project / f"{study}.yaml").write_text(yaml.safe_dump({
        "study": study, "experiment": "bench-tuning", "seed": 0, "pruner": "none", **spec}, sort_keys=False))


def run_study(project: Path, env: dict[str, str], study: str, workers: int) -> float:
    """Wall seconds of `tune run` with ``workers`` workers (process start to the tuned file)."""
    start = time.perf_counter()
    sh([sys.executable, "-m", "pipeline.tune", "run", "--search", f"{study}.yaml", "--out", f"{study}-tuned.yaml",
        "--workers", str(workers), "--no-progress"], project, env)
    return time.perf_counter() - start


def trial_numbers(project: Path, study: str) -> tuple[list[float], float]:
    """Per trial, its wall over its training time; and the study's finished trials per minute, from the first
    trial's start to the last one's end (the workers' start-up excluded)."""
    import mlflow
    import optuna

    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{project / 'optuna.db'}").get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bench-tuning")
    runs = {r.data.tags["optuna.trial"]: r for r in client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`optuna.study` = '{study}'", max_results=1000)
        if "optuna.trial" in r.data.tags}
    ratios = [(t.datetime_complete - t.datetime_start).total_seconds()
              / runs[str(t.number)].data.metrics["training_seconds"] for t in trials]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return ratios, 60 * len(trials) / span


def dvc_grid(project: Path, env: dict[str, str]) -> float:
    """The old `make tune`: every point queued as a DVC experiment, two queue workers, until all are done."""
    start = time.perf_counter()
    names = []
    for lr in OLD_GRID["train.lr"]:
        for wd in OLD_GRID["train.weight_decay"]:
            sets = [f"{k}={v}" for k, v in {**OLD_FIXED, "train.lr": lr, "train.weight_decay": wd}.items()]
            output = sh(["dvc", "exp", "run", "--queue", *[x for s in sets for x in ("-S", s)]], project, env)
            names.append(re.search(r"Queued experiment '([\w.-]+)'", output).group(1))
    sh(["dvc", "queue", "start", "-j", "2"], project, env)
    while True:
        status = {f[1]: f[-1] for f in (line.split() for line in sh(["dvc", "queue", "status"], project, env)
                                        .splitlines()[1:]) if len(f) >= 5 and f[1] in names}
        if len(status) == len(names) and not [s for s in status.values() if s in ("Queued", "Running")]:
            break
        time.sleep(2)
    elapsed = time.perf_counter() - start
    sh(["dvc", "queue", "stop"], project, env)
    failed = [n for n, s in status.items() if s != "Success"]
    if failed:
        raise click.ClickException(f"queued experiments failed: {failed}")
    return elapsed


@click.command(help=__doc__)
@click.option("--trials", default=8, show_default=True, help="Trials of the one-worker study (twice as many on two).")
@click.option("--no-grid", is_flag=True, help="Skip the 12-point grid (the DVC queue part takes minutes).")
def main(trials: int, no_grid: bool) -> None:
    def say(message: str) -> None:
        click.echo(message, err=True)

    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="tuning-speed-") as tmp:
        project = Path(tmp) / "project"
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(PROJECT_ROOT), str(project)], check=True)
        env = environment(project)
        say("building the pipeline once (dvc repro) ...")
        sh(["dvc", "repro"], project, env)
        sh(["git", "add", "dvc.lock"], project, env)
        sh(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-qm", "built",
            "--allow-empty"], project, env)
        space = {"train.lr": {"low": 0.02, "high": 0.5, "log": True},
                 "train.weight_decay": {"low": 0.00001, "high": 0.01, "log": True}}
        rows = []
        for workers in (1, 2):
            study = f"workers-{workers}"
            write_search(project, study, trials=trials * workers, sampler="random",
                         fixed={"train.epochs": TRIAL_EPOCHS}, space=space)
            say(f"{study}: {trials * workers} trials of {TRIAL_EPOCHS} epochs ...")
            wall = run_study(project, env, study, workers)
            ratios, per_minute = trial_numbers(project, study)
            rows.append((workers, wall, ratios, per_minute))
        grid = None
        if not no_grid:
            write_search(project, "old-grid", trials=12, sampler="grid", fixed=OLD_FIXED,
                         space={key: {"choices": values} for key, values in OLD_GRID.items()})
            say("the old grid as an Optuna study on two workers ...")
            after = run_study(project, env, "old-grid", 2)
            say("the old grid as 12 queued DVC experiments on two queue workers (minutes) ...")
            before = dvc_grid(project, env)
            grid = (before, after)

    load = os.getloadavg()
    click.echo(f"tuning speed, {os.cpu_count()} cores, load average (1 min) {load_before[0]:.2f} at the start, "
               f"{load[0]:.2f} at the end (uptime), {time.strftime('%Y-%m-%d %H:%M')}")
    for workers, wall, ratios, per_minute in rows:
        click.echo(f"  {workers} worker(s): {len(ratios)} trials of {TRIAL_EPOCHS} epochs, `tune run` {wall:.1f} s; "
                   f"{per_minute:.1f} trials/min; trial wall / training: median {statistics.median(ratios):.2f}x, "
                   f"max {max(ratios):.2f}x")
    worst = max(max(r[2]) for r in rows)
    speedup = rows[1][3] / rows[0][3]
    click.echo(f"  trial wall / training (worst of {sum(len(r[2]) for r in rows)}): {worst:.2f}x "
               f"(goal <= {TARGETS['trial wall / training']}x) {'ok' if worst <= 1.5 else 'MISSED'}")
    click.echo(f"  2 workers / 1, trials per minute: {speedup:.2f}x "
               f"(goal >= {TARGETS['2 workers / 1 (trials per minute)']}x) {'ok' if speedup >= 1.8 else 'MISSED'}")
    if grid:
        before, after = grid
        click.echo(f"  the old 12-point grid (50 epochs): DVC queue -j 2 {before:.0f} s, Optuna study on 2 workers "
                   f"{after:.0f} s: {before / after:.1f}x faster")


if __name__ == "__main__":
    main()
