"""Tune the scratch model on the validation split: an Optuna study shared by any number of workers, every trial
an MLflow run; the winner goes to params/tuned.yaml and DVC trains it again.

\b
  run     join (or create) the study of params/search.yaml, start --workers workers here, wait for the
          study's trials, then write the winner to params/tuned.yaml   (`make tune`)
  worker  join the study and run trials until it holds its trials: start one in each clone, on each machine
  best    write the study's best trial as it stands to params/tuned.yaml
  tuned   reproduce the winner: dvc exp run -n tuned, with each value of params/tuned.yaml set   (`make tuned`)

The study lives in the database OPTUNA_STORAGE names (a URL that may hold a password: set it in the
environment, never on a command line), else in the SQLite file optuna.db here. The runs go to the MLflow
store of the stages (MLFLOW_TRACKING_URI, else mlflow.db here). A trial trains in this process, through the
train stage's own function on the processed splits (`dvc repro preprocess` makes them); the test split is
never read.
"""

from __future__ import annotations

import sys

from pipeline.kernels import ensure_pinned

if __name__ == "__main__":  # before torch, numpy or scipy can load: a trial's bits are the train stage's
    ensure_pinned(sys.orig_argv)

import logging
import os
import socket
import subprocess
import time

import click
import yaml
from tqdm.auto import tqdm

from pipeline import paths
from pipeline._cli import params_option, stage_main, verbose_option
from pipeline.stage_runs import open_experiment, project_root
from softmax_regression.atomic import write_text
from softmax_regression.params import flatten_params, load_params
from softmax_regression.tuning.space import SearchError, load_search, load_tuned, point_params, suggest, tuned_yaml

log = logging.getLogger(__name__)

SEARCH_FILE = "params/search.yaml"
TUNED_FILE = "params/tuned.yaml"
TUNED_EXPERIMENT = "tuned"
PARENT_RUN = "mlflow_parent_run"
"""The study's user attribute holding its MLflow run, the parent of every trial's."""
PARENT_RUN_WAIT = 60.0
"""Seconds a joiner waits for the study's creator to make its MLflow run (a few requests) before making it."""
STUDY_TAG, TRIAL_TAG, STATE_TAG, HOST_TAG, WORKER_TAG = "optuna.study", "optuna.trial", "optuna.state", "host", "worker"
LOG_SECONDS = "mlflow_log_seconds"
"""The trial's user attribute holding the duration of each of its per-epoch MLflow log calls."""
REPRODUCE = "Reproduce it with `make tuned`: `dvc exp run -n tuned` with each value below set by -S."

search_option = click.option("--search", "search_path", default=SEARCH_FILE, show_default=True,
                             type=click.Path(dir_okay=False), help="The search file: the study and its space.")
out_option = click.option("--out", "out_path", default=TUNED_FILE, show_default=True,
                          type=click.Path(dir_okay=False), help="Where the winner's params are written.")


def set_param_flags(values: dict) -> list[str]:
    """``-S key=value`` for ``dvc exp run``, each value written as YAML (as DVC parses it)."""
    flags = []
    for key, value in values.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        flags += ["-S", f"{key}={text}"]
    return flags


def dvc(*args: str, capture: bool = True) -> str:
    """Run ``dvc``; its error becomes one line naming the command. Without ``capture`` DVC writes to the terminal."""
    result = subprocess.run(["dvc", *args], capture_output=capture, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        raise SearchError(f"`dvc {' '.join(args)}` failed: {detail[-1] if detail else f'exit {result.returncode}'}")
    return result.stdout or ""


def quiet_optuna() -> None:
    """Optuna's lines through this command's logging (one format), not its own coloured handler. Without
    ``--verbose``, a lost database is the command's one line naming its error (test_team_stack.py's PostgreSQL
    restart), so Optuna's lines say nothing of it: none from its storage, which logs a study created (the
    command says so itself, naming the database) and, after a database error while reading trials, "Caught
    an error from sqlalchemy ... Falling back to a slower alternative" with the SQL over several lines; and
    none for a trial failed by a database error (the worker stops on that error). Other failed trials' lines
    come without their traceback: the command's own line says what failed."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("optuna.storages._rdb.storage").setLevel(logging.ERROR)
        for handler in logging.getLogger().handlers:
            handler.addFilter(drop_optuna_detail)


def drop_optuna_detail(record: logging.LogRecord) -> bool:
    """Keep an Optuna line without its traceback, unless its error is the database's (see quiet_optuna)."""
    if not record.name.startswith("optuna"):
        return True
    if not hasattr(record, "database_error"):  # decided once: the first handler's pass drops exc_info
        from softmax_regression.tuning.study import DATABASE_ERRORS

        record.database_error = isinstance(record.exc_info[1] if record.exc_info else None, DATABASE_ERRORS)
        record.exc_info, record.exc_text = None, None
    return not record.database_error


def join_study(search_path: str, params_path: str, create: bool = True):
    """The search, the study (created by whichever worker comes first; where ``create``) and the MLflow ids of
    the experiment and of the study's parent run (where ``create``: a reader of the study needs no MLflow)."""
    from softmax_regression.tuning.study import open_storage, open_study, storage_url

    quiet_optuna()
    base = load_params(params_path)
    search = load_search(search_path, base)
    url = storage_url(os.environ, project_root())
    storage = open_storage(url, lambda trial: end_dead_trial_run(search, trial), search.heartbeat, create)
    if not create:
        return search, base, open_study(search, storage, create)[0], None, None
    experiment_id = open_experiment(search.experiment)  # checked before the study exists: a store away fails here
    study, created = open_study(search, storage, create)
    return search, base, study, experiment_id, parent_run(study, search, experiment_id, url, created)


def parent_run(study, search, experiment_id: str, url: str, created: bool) -> str:
    """The study's MLflow run, the parent of every trial's: made by the study's creator, or by a joiner that
    finds none after a while (the creator stopped between making the study and its run: Ctrl-C, a store away).
    Where several made one (joiners whose creator stopped, a creator slower than their wait), the earliest
    running one is the study's, and the others are deleted."""
    import mlflow

    from softmax_regression.tuning.study import shown, wait_for_attr

    if not created:
        try:
            return wait_for_attr(study, PARENT_RUN, PARENT_RUN_WAIT)
        except SearchError:
            log.warning("study %r has no MLflow run: its creator stopped before making it; making it here",
                        search.study)
    client = mlflow.MlflowClient()
    tags = {STUDY_TAG: search.study, "optuna.storage": shown(url), "optuna.search_digest": search.digest}
    made = client.create_run(experiment_id, run_name=f"study {search.study}", tags=tags).info.run_id
    client.log_batch(made, params=[
        mlflow.entities.Param(key, str(value)) for key, value in
        {"trials": search.trials, "sampler": search.sampler, "seed": search.seed, "pruner": search.pruner,
         **search.fixed, **{f"space.{key}": spec for key, spec in search.space.items()}}.items()])
    made_by_all = client.search_runs(
        [experiment_id], f"tags.`{STUDY_TAG}` = '{search.study}' and tags.`optuna.search_digest` = '{search.digest}' "
        "and attributes.status = 'RUNNING'")
    parent = min(made_by_all, key=lambda run: (run.info.start_time, run.info.run_id)).info.run_id
    if parent != made:
        client.delete_run(made)
    study.set_user_attr(PARENT_RUN, parent)
    if created:
        log.info("created study %r in %s, MLflow run %s", search.study, shown(url), parent)
    return parent


def end_dead_trial_run(search, trial) -> None:
    """The MLflow run of a trial whose worker died ends FAILED, not RUNNING for ever."""
    import mlflow

    client = mlflow.MlflowClient()
    for run in client.search_runs(
            [client.get_experiment_by_name(search.experiment).experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{search.study}' and tags.`{TRIAL_TAG}` = '{trial.number}' "
                          "and attributes.status = 'RUNNING'"):
        client.set_tag(run.info.run_id, STATE_TAG, "FAIL")
        client.set_terminated(run.info.run_id, "FAILED")


def trial_objective(search, base: dict, experiment_id: str, parent_id: str):
    """The objective a worker runs: one MLflow run per trial spanning its training; the final validation
    accuracy, or pruned on a poor one (per epoch) or a diverged loss."""
    import mlflow
    import optuna

    from pipeline.train_scratch import build
    from softmax_regression.data.splits import load_split
    from softmax_regression.tracking.runs import TRAINING_SECONDS, epoch_metrics, tracked_run
    from softmax_regression.training.fit import fit
    from softmax_regression.training.loop import TrainingDiverged
    from softmax_regression.tuning.study import TrialTakenOver, taken_over

    splits = {name: load_split(paths.PROCESSED_DIR, name) for name in ("train", "val")}  # once per worker
    host = socket.gethostname()

    def objective(trial: optuna.Trial) -> float:
        point = suggest(trial, search)
        trial.set_user_attr("point", point)
        params = point_params(point, base, f"trial {trial.number}")
        tags = {STUDY_TAG: search.study, TRIAL_TAG: str(trial.number), STATE_TAG: "RUNNING", HOST_TAG: host,
                WORKER_TAG: f"{host}:{os.getpid()}"}
        name = f"trial {trial.number} · {search.study}"  # the trial first: the UI cuts long names short
        stopped = None

        log_seconds = []  # how long the store took to take each epoch's metrics (a server under load shows here)

        def on_epoch(record, lr: float) -> None:
            start = time.perf_counter()
            mlflow.log_metrics(epoch_metrics(record, lr), step=record.epoch)
            log_seconds.append(time.perf_counter() - start)
            trial.report(record.val_acc, record.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {record.val_acc:.4f} after epoch {record.epoch} "
                                         "is below the median of the earlier trials'")

        with tracked_run(experiment_id=experiment_id, run_name=name, parent_run_id=parent_id, tags=tags):
            mlflow.log_params({**flatten_params(params, ("train",)), "data.normalize": params["data"]["normalize"]})
            try:
                fitted = fit(build, splits["train"], splits["val"], params["train"], params["data"]["normalize"],
                             name, progress=False, on_epoch=on_epoch)
            except (optuna.TrialPruned, TrainingDiverged) as exc:
                stopped = exc
            except BaseException:
                mlflow.set_tag(STATE_TAG, "FAIL")
                raise
            if taken_over(trial):  # the run ends FAILED, as the worker that took the trial over ended it
                mlflow.set_tag(STATE_TAG, "FAIL")
                raise TrialTakenOver(f"trial {trial.number}")
            if stopped is None:
                mlflow.log_metric(TRAINING_SECONDS, fitted.seconds)
            mlflow.set_tag(STATE_TAG, "PRUNED" if stopped else "COMPLETE")
        trial.set_user_attr(LOG_SECONDS, log_seconds)
        if stopped is not None:
            raise optuna.TrialPruned(str(stopped))
        return fitted.history[-1].val_acc

    return objective


def finish_parent(study, search, parent_id: str) -> None:
    """The study's run ends once the study holds its trials, with the best trial's accuracy and number."""
    import mlflow

    from softmax_regression.tracking.store import write_racing
    from softmax_regression.tuning.study import ranked

    best = ranked(study)
    client = mlflow.MlflowClient()
    if best:
        client.log_metric(parent_id, "best_val_acc", best[0].val_acc)
        write_racing(client.set_tag, parent_id, "best_trial", str(best[0].trial))  # each worker that ends the study
    if client.get_run(parent_id).info.status == "RUNNING":
        client.set_terminated(parent_id, "FINISHED")


def write_best(study, search, search_path: str, out_path: str) -> None:
    from softmax_regression.tuning.study import ranked

    scored = ranked(study)
    if not scored:
        raise SearchError(f"study {search.study!r} has no complete trial yet")
    winner = scored[0]
    write_text(out_path, tuned_yaml(winner, scored[1:4], search.study, search_path, REPRODUCE))
    log.info("best validation accuracy %r (trial %d; %d trials complete): %s written; `make tuned` reproduces it",
             winner.val_acc, winner.trial, len(scored), out_path)


def failed_workers(codes: list[int], finished: int, trials: int) -> str | None:
    """What ended the workers that did not succeed, or None if all did. A study short of its trials is an
    error; one that holds them is not (a killed worker's trial was failed by heartbeat and run by another)."""
    failed = [f"killed by signal {-code}" if code < 0 else f"exit {code}" for code in codes if code != 0]
    if not failed:
        return None
    said = f"{len(failed)} of {len(codes)} workers failed ({', '.join(failed)})"
    if finished < trials:
        raise SearchError(f"{said} with {finished} of {trials} trials finished (their lines above); run it again "
                          "to resume the study")
    return said


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command(help="Join (or create) the study and run trials until it holds its trials; run one in each clone.")
@search_option
@params_option
@verbose_option
@stage_main("tune worker")
def worker(search_path: str, params_path: str) -> None:
    from softmax_regression.tuning.study import work

    search, base, study, experiment_id, parent_id = join_study(search_path, params_path)
    ran = work(study, trial_objective(search, base, experiment_id, parent_id), search.trials, search.heartbeat)
    finish_parent(study, search, parent_id)
    log.info("study %r holds its %d trials; this worker ran %d", search.study, search.trials, ran)


@main.command("run", help="Create or join the study, run --workers workers here until it holds its trials, "
                          "then write the winner to --out.")
@search_option
@params_option
@out_option
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes started here (one per core: each trains on one thread).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@verbose_option
@stage_main("tune")
def run_command(search_path: str, params_path: str, out_path: str, workers: int, no_progress: bool) -> None:
    from softmax_regression.tuning.study import DATABASE_ERRORS, FINISHED, counts

    search, _, study, _, _ = join_study(search_path, params_path)  # created here, before the workers race for it
    command = [sys.executable, "-m", "pipeline.tune", "worker", "--search", search_path, "--params", params_path,
               *(["--verbose"] if log.isEnabledFor(logging.DEBUG) else [])]
    processes = [subprocess.Popen(command) for _ in range(workers)]

    def finished() -> int:
        return sum(counts(study)[s] for s in FINISHED)

    try:
        with tqdm(total=search.trials, desc=f"study {search.study}", unit="trial", disable=no_progress) as bar:
            while any(p.poll() is None for p in processes):
                try:
                    bar.update(min(search.trials, finished()) - bar.n)
                except DATABASE_ERRORS:  # a database away for a moment: the workers go on, or say why they stop
                    pass
                time.sleep(1.0)
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
            p.wait()
    failed = failed_workers([p.returncode for p in processes], finished(), search.trials)
    if failed:
        log.warning("%s; the study holds its %d trials", failed, search.trials)
    write_best(study, search, search_path, out_path)


@main.command(help="Write the study's best trial as it stands to --out.")
@search_option
@params_option
@out_option
@verbose_option
@stage_main("tune")
def best(search_path: str, params_path: str, out_path: str) -> None:
    search, _, study, _, _ = join_study(search_path, params_path, create=False)
    write_best(study, search, search_path, out_path)


@main.command(help="Reproduce the tuned model: `dvc exp run -n tuned` with each value of the tuned file set.")
@click.option("--tuned", "tuned_path", default=TUNED_FILE, show_default=True, type=click.Path(dir_okay=False),
              help="The tuned params file.")
@click.option("--name", default=TUNED_EXPERIMENT, show_default=True, help="The experiment's name.")
@verbose_option
@stage_main("tune", pinned=False)
def tuned(tuned_path: str, name: str) -> None:
    values = load_tuned(tuned_path, "; `make tune` writes it")
    point_params(values, load_params(), f"tuned params file {tuned_path}")  # checked before the old one goes
    if name in dvc("exp", "list", "--name-only").split():
        log.info("replacing the earlier experiment %s", name)
        dvc("exp", "remove", name)
    log.info("dvc exp run -n %s %s", name, " ".join(set_param_flags(values)))
    sys.stdout.flush()
    dvc("exp", "run", "-n", name, *set_param_flags(values), capture=False)


if __name__ == "__main__":
    main()
