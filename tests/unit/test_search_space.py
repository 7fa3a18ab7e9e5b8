"""Tuning: the search file and its one-line refusals, the samplers (seeded per trial, the grid), the worker loop
that ends a study with exactly its trials however many workers share it, and the tuned file."""

from __future__ import annotations

import threading

import optuna
import pytest
import yaml

from pipeline.tune import REPRODUCE, failed_workers, set_param_flags
from softmax_regression.params import load_params
from softmax_regression.tuning.space import (
    Choices,
    Range,
    Scored,
    SearchError,
    load_search,
    load_tuned,
    suggest,
    tuned_yaml,
)
from softmax_regression.tuning.study import (
    FINISHED,
    HeartbeatStorage,
    counts,
    database_error,
    open_storage,
    open_study,
    ranked,
    sampler,
    work,
)
from support import PROJECT_ROOT

BASE = load_params(PROJECT_ROOT / "params.yaml")
SEARCH = {
    "study": "s", "experiment": "tuning", "trials": 4, "sampler": "random", "seed": 3, "pruner": "none",
    "fixed": {"train.epochs": 2},
    "space": {"train.lr": {"low": 0.01, "high": 1.0, "log": True}, "train.batch_size": {"choices": [64, 256]},
              "train.weight_decay": {"low": 0.0, "high": 0.01}, "train.epochs": None},
}
del SEARCH["space"]["train.epochs"]


def write_search(tmp_path, **changes):
    spec = {**SEARCH, **changes}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_the_projects_search_file_loads_and_every_key_is_a_range_or_choices():
    search = load_search(PROJECT_ROOT / "params/search.yaml", BASE)
    assert search.trials > 0 and search.sampler == "tpe"
    assert set(search.space) == {"train.lr", "train.weight_decay", "train.batch_size", "train.epochs",
                                 "train.schedule", "data.normalize"}
    assert search.space["train.lr"].log and search.space["train.epochs"].integer
    assert isinstance(search.space["data.normalize"], Choices)


def test_a_search_file_reads_ranges_choices_and_fixed_values(tmp_path):
    search = load_search(write_search(tmp_path), BASE)
    assert search.fixed == {"train.epochs": 2}
    assert search.space == {"train.lr": Range(0.01, 1.0, True), "train.batch_size": Choices((64, 256)),
                            "train.weight_decay": Range(0.0, 0.01)}
    assert not search.space["train.weight_decay"].integer
    # the digest names the search, not its size: more trials continue the same study
    assert load_search(write_search(tmp_path, trials=9), BASE).digest == search.digest
    assert load_search(write_search(tmp_path, seed=4), BASE).digest != search.digest
    assert search.heartbeat == 5  # left out: the default
    beating = load_search(write_search(tmp_path, heartbeat=0.5), BASE)
    assert beating.heartbeat == 0.5 and beating.digest == search.digest  # how often, not what is searched


@pytest.mark.parametrize("changes, message", [
    ({"space": {"train.lr": {"low": -1, "high": 1}}}, "space.train.lr = -1: params key train.lr is -1"),
    ({"space": {"train.speed": {"choices": [1, 2]}}}, "unknown params key train.speed"),
    ({"space": {"evaluate.baseline": {"choices": [True, False]}}}, "space.evaluate.baseline is not a key that shapes"),
    ({"space": {"train.lr": {"choices": []}}}, "space.train.lr.choices must list distinct values"),
    ({"space": {"train.lr": {"low": 0.5, "high": 0.1}}}, "space.train.lr needs numbers low < high"),
    ({"space": {"train.lr": {"low": 0.0, "high": 0.1, "log": True}}}, "space.train.lr.log must be true or false"),
    ({"space": {"train.lr": {"low": 0.1, "high": 0.5, "lr": 1}}}, "space.train.lr must be {choices"),
    ({"space": {"data.normalize": {"choices": ["zscore"]}}}, "params key data.normalize is 'zscore'"),
    ({"space": {"train.epochs": {"choices": [1, 2]}}}, "train.epochs is both fixed and in the space"),
    ({"space": {}}, "space names no key to search"),
    ({"space": {"lr": {"choices": [1]}}}, "space must map dotted params keys"),
    ({"sampler": "bayes"}, "sampler must be one of tpe, random, grid, not 'bayes'"),
    ({"pruner": "hyperband"}, "pruner must be one of median, none"),
    ({"trials": 0}, "trials must be a whole number of at least 1"),
    ({"seed": -1}, "seed must be a whole number between 0 and 4294967295"),
    ({"seed": 2**32}, "seed must be a whole number between 0 and 4294967295"),
    ({"study": ""}, "study must be a non-empty name"),
    ({"sampler": "grid"}, "the grid sampler needs choices, and space.train.lr is a range"),
    ({"sampler": "grid", "trials": 3, "space": {"train.batch_size": {"choices": [64, 256]}}},
     "trials is 3, but the grid has 2 points"),
    ({"fixed": {"train.loss": "fast"}}, "fixed: params key train.loss is 'fast'"),
    ({"grid": {}}, "may hold heartbeat, nothing else (look at grid)"),
    ({"heartbeat": 0}, "heartbeat must be a number of seconds above 0"),
    ({"heartbeat": "5s"}, "heartbeat must be a number of seconds above 0"),
    # a trial trains on the processed splits: a data key but data.normalize would do nothing in it, and
    # `make tuned` would set it (data.val_size 5000 would also pass the check below while the splits have none)
    ({"fixed": {"data.val_size": 5000}}, "fixed.data.val_size is not a key that shapes the model"),
    ({"fixed": {"tracking.experiment": "x"}}, "fixed.tracking.experiment is not a key that shapes the model"),
    ({"space": {"train.epochs": {"low": 10, "high": 50, "step": 10.0}}, "fixed": {}},
     "train.epochs takes whole numbers: space.train.epochs's low, high and step must be integers"),
    ({"space": {"train.epochs": {"low": 1.0, "high": 5}}, "fixed": {}}, "train.epochs takes whole numbers"),
])
def test_a_bad_search_file_is_one_line_naming_the_key(tmp_path, changes, message):
    with pytest.raises(SearchError) as info:
        load_search(write_search(tmp_path, **changes), BASE)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("extra, named", [({1: "x"}, "1"), ({1: "x", "extra": 2}, "1, extra")])
def test_a_search_file_with_a_key_that_is_no_name_names_it(tmp_path, extra, named):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({**SEARCH, **extra}))
    with pytest.raises(SearchError, match=rf"nothing else \(look at {named}\)$"):
        load_search(path, BASE)


def test_a_float_key_draws_floats_however_its_bounds_are_written(tmp_path):
    """``{low: 0, high: 1}`` of train.weight_decay is the interval, not the two integers 0 and 1."""
    search = load_search(write_search(tmp_path, space={"train.weight_decay": {"low": 0, "high": 1}}), BASE)
    assert not search.space["train.weight_decay"].integer
    study = optuna.create_study(sampler=sampler(search))
    draws = [suggest(study.ask(), search)["train.weight_decay"] for _ in range(20)]
    assert all(isinstance(d, float) for d in draws) and len(set(draws)) == 20, draws


def test_the_study_is_of_the_search_and_of_what_the_trials_take_from_params_yaml(tmp_path):
    """Changed train or data keys in params.yaml (the validation split, a key the search does not set) make
    another study: its accuracies would not compare with the first's. Where fetch looks for the data does not,
    nor a key the search sets (two machines' params.yaml may differ there: test_team_stack.py)."""
    digest = load_search(write_search(tmp_path), BASE).digest
    for section, key, value in (("train", "loss", "squared"), ("train", "seed", 1), ("data", "val_size", 1000),
                                ("data", "seed", 7)):
        assert BASE[section][key] != value
        changed = {**BASE, section: {**BASE[section], key: value}}
        assert load_search(write_search(tmp_path), changed).digest != digest, key
    # a key the search sets (train.epochs is fixed; train.lr drawn): the trials never read params.yaml's
    elsewhere = {**BASE, "data": {**BASE["data"], "local_dir": "/srv/fashion-mnist", "retries": 9},
                 "train": {**BASE["train"], "epochs": BASE["train"]["epochs"] + 1, "lr": BASE["train"]["lr"] * 2},
                 "report": {**BASE["report"], "n_images": 3}}
    assert load_search(write_search(tmp_path), elsewhere).digest == digest


def test_a_search_without_a_validation_split_is_refused(tmp_path):
    base = {**BASE, "data": {**BASE["data"], "val_size": 0}}
    with pytest.raises(SearchError, match="data.val_size is 0, so the test split would be the validation split"):
        load_search(write_search(tmp_path), base)


def test_a_missing_search_file_is_named(tmp_path):
    with pytest.raises(SearchError, match="search file .*nowhere.yaml not found"):
        load_search(tmp_path / "nowhere.yaml", BASE)


def storage(tmp_path):
    return open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", on_dead_trial=lambda trial: None, heartbeat=5)


def points_of(study):
    """The finished trials' points by number (a trial two workers asked for at once, past the study's size,
    ends FAIL having run nothing: :class:`~softmax_regression.tuning.study.StudyFull`)."""
    return {t.number: t.params for t in study.get_trials(states=FINISHED)}


def test_each_trials_random_draws_come_from_the_seed_and_its_number_alone(tmp_path):
    """Two workers with one seed would draw the same points; drawn per trial number, a study run by one worker
    and a study run by two draw the same points for the same numbers, and no two trials of one study agree."""
    search = load_search(write_search(tmp_path, trials=6), BASE)
    studies = []
    for name, threads in (("one", 1), ("two", 2)):
        named = search.__class__(**{**search.__dict__, "study": name})
        joined = [open_study(named, storage(tmp_path))[0] for _ in range(threads)]  # a sampler each, as processes
        workers = [threading.Thread(target=work, args=(study, lambda t: suggest(t, search)["train.lr"], 6),
                                    kwargs={"poll": 0.05}) for study in joined]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        studies.append(joined[0])
    one, two = (points_of(s) for s in studies)
    assert len(one) == len(two) == 6
    assert one == two
    assert len({p["train.lr"] for p in one.values()}) == 6


def test_the_grid_sampler_runs_every_combination_once(tmp_path):
    space = {"train.lr": {"choices": [0.05, 0.1, 0.2]}, "train.batch_size": {"choices": [64, 256]}}
    search = load_search(write_search(tmp_path, sampler="grid", trials=6, space=space), BASE)
    study, created = open_study(search, storage(tmp_path))
    assert created and isinstance(sampler(search), optuna.samplers.GridSampler)
    assert work(study, lambda t: suggest(t, search)["train.lr"], 6, poll=0.05) == 6
    assert sorted((p["train.lr"], p["train.batch_size"]) for p in points_of(study).values()) == sorted(
        (lr, bs) for lr in (0.05, 0.1, 0.2) for bs in (64, 256))


def test_a_grid_point_whose_worker_stopped_in_mid_trial_runs_when_a_worker_starts_again(tmp_path):
    """Ctrl-C in mid-trial ends the trial FAIL and the worker with it: started again, a worker runs that point,
    not one of the others a second time."""
    search = load_search(write_search(tmp_path, sampler="grid", trials=3,
                                      space={"train.lr": {"choices": [0.05, 0.1, 0.2]}}), BASE)

    def stopped_in_trial_1(trial):
        lr = suggest(trial, search)["train.lr"]
        if trial.number == 1:
            raise KeyboardInterrupt
        return lr

    with pytest.raises(KeyboardInterrupt):
        work(open_study(search, storage(tmp_path))[0], stopped_in_trial_1, 3, poll=0.05)
    study = open_study(search, storage(tmp_path))[0]
    assert work(study, lambda t: suggest(t, search)["train.lr"], 3, poll=0.05) == 2
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert sorted(p["train.lr"] for p in points_of(study).values()) == [0.05, 0.1, 0.2]


def test_a_joiner_beats_as_the_studys_creator_does_whatever_its_search_file_says(tmp_path, caplog):
    """The heartbeat is not the search space (a clone may change it), but a joiner that waited a shorter grace
    than the creator beats would fail the creator's live trials: every worker keeps the creator's."""
    creator = load_search(write_search(tmp_path, heartbeat=60), BASE)
    study, created = open_study(creator, storage(tmp_path))
    assert created
    joiner = load_search(write_search(tmp_path, heartbeat=1), BASE)
    joined_storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", lambda trial: None, joiner.heartbeat)
    with caplog.at_level("INFO", logger="softmax_regression.tuning.study"):
        open_study(joiner, joined_storage)
    assert (joined_storage.heartbeat_interval, joined_storage.grace_period) == (60, 240)
    assert "study 's' beats every 60 s, as its creator set (not the search file's 1 s)" in caplog.text


def test_a_worker_whose_trial_another_worker_failed_drops_its_result_and_goes_on(tmp_path, caplog):
    """A worker paused past the grace period (Ctrl-Z, a suspended machine) finds, as it resumes, its trial failed
    by another worker and queued again: it drops the result and runs the next trial, where Optuna would stop it
    with an error of its own ("Cannot tell a FAIL trial", "Should not reach"). Paused in mid-training, it learns
    of it at its next report; paused after its last one, as it returns."""
    search = load_search(write_search(tmp_path, trials=3), BASE)
    study, other = (open_study(search, storage(tmp_path))[0] for _ in range(2))

    pauses = ["in mid-training", "after the last epoch"]

    def paused(trial):
        lr = suggest(trial, search)["train.lr"]
        if pauses:  # meanwhile the other worker failed the trial, as its heartbeat stopped, and queued it again
            other._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            other.enqueue_trial(trial.params)
            if pauses.pop(0) == "in mid-training":
                trial.report(lr, 1)  # Optuna refuses a report to a finished trial
        return lr

    with caplog.at_level("WARNING", logger="softmax_regression.tuning.study"):
        assert work(study, paused, 3, poll=0.05) == 3
    # trial 1 is trial 0 queued again (and taken over again), trial 2 trial 1 queued again
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert study.trials[0].params == study.trials[1].params == study.trials[2].params
    assert "trial 0 was failed by another worker" in caplog.text and "trial 1 was failed" in caplog.text


def test_workers_end_the_study_with_exactly_its_trials_and_a_joiner_of_another_search_is_refused(tmp_path):
    search = load_search(write_search(tmp_path, trials=7), BASE)
    study, created = open_study(search, storage(tmp_path))
    joined, joined_created = open_study(search, storage(tmp_path))
    assert created and not joined_created

    def objective(trial):
        lr = suggest(trial, search)["train.lr"]
        if trial.number == 2:
            raise optuna.TrialPruned("pruned")
        return lr

    workers = [threading.Thread(target=work, args=(s, objective, 7), kwargs={"poll": 0.05}) for s in (study, joined)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    state = counts(study)
    assert sum(state[s] for s in FINISHED) == 7 and state[optuna.trial.TrialState.PRUNED] == 1, state
    assert work(study, objective, 7, poll=0.05) == 0  # a late worker finds the study done
    with pytest.raises(SearchError, match="study 's' was created from another search space or params.yaml"):
        open_study(load_search(write_search(tmp_path, seed=99), BASE), storage(tmp_path))
    other_base = {**BASE, "train": {**BASE["train"], "init_std": BASE["train"]["init_std"] * 2}}
    with pytest.raises(SearchError, match="study 's' was created from another search space or params.yaml"):
        open_study(load_search(write_search(tmp_path), other_base), storage(tmp_path))


def test_the_tuned_file_holds_the_winner_with_its_runners_up_and_reads_back_as_dvc_flags(tmp_path):
    winner = Scored({"train.lr": 0.05, "train.schedule": "cosine", "data.normalize": "per_pixel"}, 0.8606, 7)
    others = [Scored({"train.lr": 0.1, "train.schedule": "step", "data.normalize": "none"}, 0.85, 3)]
    text = tuned_yaml(winner, others, "softmax-tpe-1", "params/search.yaml", REPRODUCE)
    (tmp_path / "tuned.yaml").write_text(text)
    assert load_tuned(tmp_path / "tuned.yaml") == winner.point
    assert "# trial 7: validation accuracy 0.8606" in text and "#   trial 3: 0.8500  train.lr=0.1" in text
    assert set_param_flags(winner.point) == ["-S", "train.lr=0.05", "-S", "train.schedule=cosine",
                                             "-S", "data.normalize=per_pixel"]


def test_ranking_is_by_validation_accuracy_then_the_earlier_trial(tmp_path):
    search = load_search(write_search(tmp_path, trials=3), BASE)
    study, _ = open_study(search, storage(tmp_path))
    values = iter([0.8, 0.9, 0.9])

    def objective(trial):
        trial.set_user_attr("point", suggest(trial, search))
        return next(values)

    work(study, objective, 3, poll=0.05)
    assert [s.trial for s in ranked(study)] == [1, 2, 0]


def test_a_heartbeat_the_database_does_not_take_is_one_warning_and_the_next_one_gets_through(tmp_path, caplog,
                                                                                            monkeypatch):
    """Optuna's heartbeat thread handles no error: a failed write would end it, and the live trial would be
    failed after the grace. Here the database is locked by another connection for one heartbeat."""
    # a store test of this process may have set every SQLite connection's busy wait (tracking.store.busy_timeout)
    monkeypatch.setenv("FMNIST_STORE_BUSY_TIMEOUT", "0.05")
    import contextlib
    import logging
    import sqlite3
    import time
    import warnings

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are experimental in Optuna, and meant for Study.optimize
        storage = HeartbeatStorage(url, engine_kwargs={"connect_args": {"timeout": 0.05}}, heartbeat_interval=1,
                                   grace_period=4)
        trial = optuna.create_study(storage=storage).ask()  # RUNNING
    storage.record_heartbeat(trial._trial_id)

    def last_beat():
        with contextlib.closing(sqlite3.connect(tmp_path / "optuna.db")) as con:
            return con.execute("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = ?", (trial._trial_id,)
                               ).fetchone()[0]

    first = last_beat()
    with contextlib.closing(sqlite3.connect(tmp_path / "optuna.db", isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        with caplog.at_level(logging.WARNING, logger="softmax_regression.tuning.study"):
            storage.record_heartbeat(trial._trial_id)  # no exception: the thread would go on
        holder.execute("ROLLBACK")
    (record,) = [r for r in caplog.records if r.name == "softmax_regression.tuning.study"]
    assert record.getMessage() == ("a heartbeat of a running trial did not reach the study database (database is "
                                   "locked); the next one tries again")
    time.sleep(1.1)  # SQLite's CURRENT_TIMESTAMP counts seconds
    storage.record_heartbeat(trial._trial_id)
    assert last_beat() > first


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")  # ask(), here
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_queued_again(tmp_path):
    """A worker that died between creating its trial and the trial's first heartbeat (the database restarting
    just then) leaves a running trial with no heartbeat at all. Once it is older than the grace period, the next
    worker that looks fails it and queues its point again, as any dead trial; a young one is left running."""
    import contextlib
    import datetime
    import sqlite3
    import warnings

    dead = []
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", on_dead_trial=dead.append, heartbeat=5)
    study = optuna.create_study(storage=storage)
    space = {"train.lr": optuna.distributions.FloatDistribution(0.01, 1.0)}
    orphan, young = study.ask(space), study.ask(space)  # RUNNING, and no heartbeat: only optimize sends them
    long_ago = (datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)  # Optuna stores naive UTC
                - datetime.timedelta(seconds=storage.grace_period + 1))
    with contextlib.closing(sqlite3.connect(tmp_path / "optuna.db")) as con, con:
        con.execute("UPDATE trials SET datetime_start = ? WHERE trial_id = ?", (long_ago.isoformat(" "),
                                                                               orphan._trial_id))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {orphan.number: optuna.trial.TrialState.FAIL, young.number: optuna.trial.TrialState.RUNNING,
                      2: optuna.trial.TrialState.WAITING}
    assert study.get_trials()[2].params == orphan.params
    assert [trial.number for trial in dead] == [orphan.number]


def test_a_database_lost_as_a_trial_ends_is_the_error_a_worker_raises(tmp_path, monkeypatch):
    """Optuna words a lost database as "An exception is raised during the commit ... invalid data", and, failing
    to read a trial back after failing to record its result, raises an UnboundLocalError of its own (``cannot
    access local variable 'updated_state'``): the worker raises the database's error, which its one line names."""
    import sqlalchemy.exc

    study = optuna.create_study(storage=storage(tmp_path))

    def lost(*args, **kwargs):
        cause = sqlalchemy.exc.OperationalError("SELECT trials", {}, Exception("server closed the connection"))
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from cause

    def objective(trial):
        monkeypatch.setattr(study._storage, "get_trial", lost)
        monkeypatch.setattr(study._storage, "set_trial_state_values", lost)
        return 0.5

    with pytest.raises(sqlalchemy.exc.OperationalError, match="server closed the connection"):
        work(study, objective, 1, poll=0.05)


def test_an_unbound_local_raised_over_another_error_is_not_taken_for_a_lost_database():
    """Only Optuna's UnboundLocalError over a database error stands for the database's: one raised while
    handling any other error (a bug in a trial's code) is the error a worker names."""
    try:
        try:
            raise ValueError("a bug's own error")
        except ValueError:
            raise UnboundLocalError("cannot access local variable 'x'") from None
    except UnboundLocalError as exc:
        assert exc.__context__ is not None
        assert database_error(exc) is exc


QUIET_OPTUNA = """
import logging
import optuna
import sqlalchemy.exc
logging.basicConfig(level=logging.INFO, format="tune worker: %(message)s")
from pipeline.tune import quiet_optuna
quiet_optuna()
logging.getLogger("optuna.storages._rdb.storage").warning(
    "Caught an error from sqlalchemy: (psycopg.errors.AdminShutdown) terminating connection\\n[SQL: SELECT ...]. "
    "Falling back to a slower alternative.")
study = optuna.create_study(direction="maximize")
study.optimize(lambda trial: 0.85, n_trials=1)

def lost(trial):
    raise sqlalchemy.exc.OperationalError("INSERT trial_intermediate_values", {}, Exception("server closed"))

def broken(trial):
    raise RuntimeError("a bug in training")

for objective in (lost, broken):
    try:
        study.optimize(objective, n_trials=1)
    except Exception as exc:
        logging.error("error: %s", str(exc).splitlines()[0])
"""


def test_a_worker_logs_optuna_trials_but_nothing_of_a_lost_database_beside_its_own_line():
    """Without --verbose, a worker's log keeps Optuna's trial lines (a failed one without its traceback) and
    drops its storage's lines and the error of a trial failed by a database error: a lost database, which
    Optuna logs over several lines, is the worker's one error line."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", QUIET_OPTUNA], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["tune worker"] * len(lines), lines
    assert [line for line in lines if "Trial" in line or "error" in line] == [
        "tune worker: Trial 0 finished with value: 0.85 and parameters: {}. Best is trial 0 with value: 0.85.",
        "tune worker: Trial 1 failed with value None.",  # the trial the database took down, without its error
        "tune worker: error: (builtins.Exception) server closed",
        "tune worker: Trial 2 failed with parameters: {} because of the following error: "
        "RuntimeError('a bug in training').",
        "tune worker: Trial 2 failed with value None.",
        "tune worker: error: a bug in training"], lines
    assert not any("sqlalchemy" in line or "Traceback" in line for line in lines), lines


def test_reading_a_study_that_does_not_exist_says_so_and_creates_none(tmp_path):
    search = load_search(write_search(tmp_path), BASE)
    with pytest.raises(SearchError, match="no study 's' in the study database: `make tune` runs it"):
        open_study(search, storage(tmp_path), create=False)
    assert optuna.get_all_study_names(storage(tmp_path)) == []


def test_a_failed_worker_fails_a_run_only_while_the_study_lacks_trials():
    """`tune run`: a worker killed in mid-trial (its trial run again by another) leaves a study that holds its
    trials, so the winner is written; a study short of them is an error naming how each worker ended."""
    assert failed_workers([0, 0], finished=4, trials=4) is None
    assert failed_workers([0, -9], finished=4, trials=4) == "1 of 2 workers failed (killed by signal 9)"
    with pytest.raises(SearchError, match=r"^2 of 2 workers failed \(exit 1, killed by signal 15\) with 3 of 4 "
                                          r"trials finished \(their lines above\); run it again to resume the study$"):
        failed_workers([1, -15], finished=3, trials=4)


def test_an_unreadable_or_missing_study_database_is_one_line_naming_it(tmp_path):
    """The URL may hold a password: an unreadable one is not shown, a readable one without it; `best` (no
    ``create``) of a SQLite file that is not there creates none."""
    def opened(url, create=True):
        with pytest.raises(SearchError) as info:
            open_storage(url, on_dead_trial=lambda trial: None, heartbeat=5, create=create)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert opened("not a url:secret") == ("OPTUNA_STORAGE is not a database URL SQLAlchemy reads (Could not parse "
                                          "SQLAlchemy URL from given URL string)")
    line = opened("postgres://optuna:secret@db.example/optuna")
    assert line.startswith("cannot open the study database postgres://optuna:***@db.example/optuna (OPTUNA_STORAGE")
    assert "secret" not in line and "sqlalchemy.dialects:postgres" in line
    assert opened(f"sqlite:///{tmp_path / 'nowhere' / 'o.db'}").endswith("unable to open database file")
    missing = tmp_path / "optuna.db"
    assert opened(f"sqlite:///{missing}", create=False) == f"no study database at {missing}: `make tune` runs the study"
    assert not missing.exists()


def test_tuned_checks_the_tuned_values_before_it_touches_an_experiment(tmp_path, monkeypatch):
    """A bad value in the tuned file is one line naming it, before `dvc exp remove` of the earlier ``tuned``
    (here no DVC project at all: reaching DVC would fail on that instead)."""
    import shutil
    import signal

    from click.testing import CliRunner

    from pipeline.tune import main

    shutil.copyfile(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "tuned.yaml").write_text("train.lr: -1\n")
    monkeypatch.chdir(tmp_path)
    previous = signal.getsignal(signal.SIGTERM)  # stage_main takes SIGTERM over for the process
    try:
        result = CliRunner().invoke(main, ["tuned", "--tuned", "tuned.yaml"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == ["tune: error: tuned params file tuned.yaml: params key train.lr is -1; "
                                          "expected a number > 0"], result.stderr


def test_a_study_whose_creator_stopped_before_its_mlflow_run_gets_it_from_the_next_worker(store_root, monkeypatch):
    """The creator stopped between making the study and its MLflow run (Ctrl-C, the store away): the next worker
    makes the run, and reading the study (`best`) needs no run at all."""
    import mlflow

    import pipeline.tune as tune
    from support import tracking_store

    monkeypatch.chdir(store_root)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.setattr(tune, "PARENT_RUN_WAIT", 0.2)
    path, params = str(write_search(store_root)), str(PROJECT_ROOT / "params.yaml")
    open_study(load_search(path, BASE), storage(store_root))  # the creator, stopped right after
    assert tune.join_study(path, params, create=False)[3:] == (None, None)
    with tracking_store(store_root):
        _, _, study, experiment_id, parent_id = tune.join_study(path, params)
        assert study.user_attrs[tune.PARENT_RUN] == parent_id
        parent = mlflow.MlflowClient().get_run(parent_id)
        assert parent.info.experiment_id == experiment_id and parent.data.tags[tune.STUDY_TAG] == "s"
        assert tune.join_study(path, params)[4] == parent_id  # found by the workers after it
        # another joiner that gave up waiting at the same moment made one too: the earlier one is the study's
        client, search = mlflow.MlflowClient(), load_search(path, BASE)
        url = f"sqlite:///{store_root}/optuna.db"
        assert tune.parent_run(study, search, experiment_id, url, created=True) == parent_id
        studies = client.search_runs([experiment_id], run_view_type=mlflow.entities.ViewType.ALL)
        assert sorted(run.info.lifecycle_stage for run in studies) == ["active", "deleted"]
        assert study.user_attrs[tune.PARENT_RUN] == parent_id
