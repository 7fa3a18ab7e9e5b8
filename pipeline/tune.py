"""Tune the linear model on the validation split: a DVC experiment sweep, recorded in MLflow.

\b
  sweep   queue every point of the sweep file as a DVC experiment (dvc exp run --queue),
          run the queue on --jobs workers (dvc queue start), wait for it, then select
  select  pick the point whose scratch model has the best final validation accuracy in
          MLflow and write its params to params/tuned.yaml (the test split is never read)
  tuned   reproduce the winner: dvc exp run -n tuned, with each value of params/tuned.yaml set

`make tune` runs `sweep`; `make tuned` runs `tuned`.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import yaml
from tqdm.auto import tqdm

from pipeline._cli import params_option, stage_main, verbose_option
from softmax_regression.atomic import write_text
from softmax_regression.params import load_params
from softmax_regression.selection import (
    SweepError,
    best,
    candidates_from_runs,
    format_point,
    load_sweep,
    load_tuned,
    tuned_yaml,
)
from softmax_regression.tracking.store import configure

log = logging.getLogger(__name__)

SWEEP_FILE = "params/sweep.yaml"
TUNED_FILE = "params/tuned.yaml"
TUNED_EXPERIMENT = "tuned"

sweep_option = click.option("--sweep", "sweep_path", default=SWEEP_FILE, show_default=True,
                            type=click.Path(dir_okay=False), help="The sweep file: fixed values and a grid.")
out_option = click.option("--out", "out_path", default=TUNED_FILE, show_default=True,
                          type=click.Path(dir_okay=False), help="Where the winner's params are written.")


REPRODUCE = "Reproduce it with `make tuned`: `dvc exp run -n tuned` with each value below set by -S."


def set_param_flags(values: dict) -> list[str]:
    """``-S key=value`` for ``dvc exp run``, each value written as YAML (as DVC parses it)."""
    flags = []
    for key, value in values.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        flags += ["-S", f"{key}={text}"]
    return flags


def dvc(*args: str, capture: bool = True) -> str:
    """Run ``dvc``; its error becomes one line naming the command.

    Without ``capture`` DVC writes to the terminal. Captured output goes through a file, not a pipe:
    ``dvc queue start`` leaves workers behind that hold its output open, and reading a pipe would wait
    for them to finish the whole queue.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        result = subprocess.run(["dvc", *args], stdout=out if capture else None, stderr=err if capture else None,
                                text=True)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if result.returncode != 0:
        detail = (stderr or stdout).strip().splitlines()
        raise SweepError(f"`dvc {' '.join(args)}` failed: {detail[-1] if detail else f'exit {result.returncode}'}")
    return stdout


def queue_status() -> dict[str, str]:
    """The status of each task of the experiment queue by name (``dvc queue status``'s table)."""
    status = {}
    for line in dvc("queue", "status").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and re.fullmatch(r"[0-9a-f]{7}", fields[0]):
            status[fields[1]] = fields[-1]
    return status


def wait_for(names: list[str], timeout: float, poll: float = 5.0, progress: bool = True) -> dict[str, str]:
    """Wait until none of ``names`` is queued or running; returns their final status."""
    deadline = time.monotonic() + timeout
    with tqdm(total=len(names), desc="sweep", unit="experiment", disable=not progress) as bar:
        while True:
            status = {name: s for name, s in queue_status().items() if name in names}
            busy = [name for name, s in status.items() if s in ("Queued", "Running")]
            bar.update(len(names) - len(busy) - bar.n)
            if not busy:
                return status
            if time.monotonic() > deadline:
                raise SweepError(f"sweep still running after {timeout:.0f} s: {', '.join(busy)}")
            time.sleep(poll)


def select(sweep_path: str, params_path: str, out_path: str) -> None:
    import mlflow

    params = load_params(params_path)
    _, points = load_sweep(sweep_path, params)
    uri = configure(Path.cwd())
    experiment_name = params["tracking"]["experiment"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise SweepError(f"no MLflow experiment {experiment_name!r} in {uri}; run the sweep first")
    candidates = candidates_from_runs(client, experiment.experiment_id, points, params)
    winner = best(candidates)
    for candidate in candidates:
        log.info("%s %.4f  %s", "*" if candidate is winner else " ", candidate.val_acc, format_point(candidate.point))
    write_text(out_path, tuned_yaml(winner, candidates, sweep_path, REPRODUCE))
    log.info("best validation accuracy %.4f (run %s): %s written; `make tuned` reproduces it",
             winner.val_acc, winner.run_id, out_path)


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command(help="Queue the sweep as DVC experiments, run them on --jobs workers, wait, then select.")
@sweep_option
@params_option
@out_option
@click.option("--jobs", "-j", default=2, show_default=True, type=click.IntRange(1, 16),
              help="Experiments run at once (dvc queue start -j).")
@click.option("--timeout", default=7200, show_default=True, type=click.FloatRange(1),
              help="Seconds to wait for the whole sweep.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@verbose_option
@stage_main("tune", pinned=False)
def sweep(sweep_path: str, params_path: str, out_path: str, jobs: int, timeout: float, no_progress: bool) -> None:
    _, points = load_sweep(sweep_path, load_params(params_path))
    names = []
    for point in points:
        output = dvc("exp", "run", "--queue", *set_param_flags(point))
        found = re.search(r"Queued experiment '([\w.-]+)'", output)
        if not found:
            raise SweepError(f"dvc did not name the experiment it queued for {format_point(point)}")
        names.append(found.group(1))
    log.info("queued %d experiments from %s: %s; running them %d at a time", len(names), sweep_path,
             ", ".join(names), jobs)
    dvc("queue", "start", "-j", str(jobs))
    status = wait_for(names, timeout, progress=not no_progress)
    failed = sorted(name for name, s in status.items() if s != "Success")
    if failed or len(status) < len(names):
        raise SweepError(f"experiments did not succeed: {', '.join(failed) or 'missing from the queue'} "
                         "(`dvc queue logs <name>` shows why)")
    select(sweep_path, params_path, out_path)


@main.command("select", help="Pick the best validation accuracy among the sweep's runs in MLflow; "
                             "write its params to --out.")
@sweep_option
@params_option
@out_option
@verbose_option
@stage_main("tune", pinned=False)
def select_command(sweep_path: str, params_path: str, out_path: str) -> None:
    select(sweep_path, params_path, out_path)


@main.command(help="Reproduce the tuned model: `dvc exp run -n tuned` with each value of the tuned file set.")
@click.option("--tuned", "tuned_path", default=TUNED_FILE, show_default=True, type=click.Path(dir_okay=False),
              help="The tuned params file.")
@click.option("--name", default=TUNED_EXPERIMENT, show_default=True, help="The experiment's name.")
@verbose_option
@stage_main("tune", pinned=False)
def tuned(tuned_path: str, name: str) -> None:
    values = load_tuned(tuned_path, "; `make tune` writes it")
    if name in dvc("exp", "list", "--name-only").split():
        log.info("replacing the earlier experiment %s", name)
        dvc("exp", "remove", name)
    log.info("dvc exp run -n %s %s", name, " ".join(set_param_flags(values)))
    sys.stdout.flush()
    dvc("exp", "run", "-n", name, *set_param_flags(values), capture=False)


if __name__ == "__main__":
    main()
