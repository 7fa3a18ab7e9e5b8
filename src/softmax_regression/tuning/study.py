"""An Optuna study any number of workers share, on any number of machines, through one database.

A worker joins the study (creating it if it is the first), then runs trials
until the study holds the number of finished ones (complete or pruned) the
search asks for. Each trial sends a heartbeat; a trial whose worker died
(SIGKILL, a lost machine) is failed by the next worker that looks, after the
grace period, and queued again with its params, so no point is lost and none
is counted twice.
"""

from __future__ import annotations

import collections
import datetime
import logging
import random
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from softmax_regression.errors import one_line
from softmax_regression.tuning.space import Scored, Search, SearchError

log = logging.getLogger(__name__)

STORAGE_VARIABLE = "OPTUNA_STORAGE"
"""The environment variable naming a shared study database (it may hold a password: never a command line)."""
DEFAULT_STORAGE = "optuna.db"
"""The SQLite file in the project that holds the studies when no shared database is named."""
GRACE_HEARTBEATS = 4
"""A running trial that missed this many heartbeats (``Search.heartbeat`` apart) is taken for dead."""
MAX_RETRIES = 2
SEARCH_DIGEST = "search_digest"
HEARTBEAT = "heartbeat"
"""The study's user attribute holding its creator's heartbeat, which every worker keeps (see :func:`open_study`)."""
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyFull(Exception):
    """A trial asked for after the study had its trials (two workers asked at once): it runs nothing."""


class TrialTakenOver(Exception):
    """Another worker failed this worker's running trial and queued it again: this worker sent no heartbeat
    for the grace period (paused, or cut off from the study database) yet lives. Its result is not the study's."""


def taken_over(trial: optuna.Trial) -> bool:
    """Whether another worker failed this running trial (see :class:`TrialTakenOver`)."""
    return any(t.number == trial.number for t in trial.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


DATABASE_ERRORS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)
"""What Optuna's database storage raises when it loses the study's database: Optuna's wrapping, or SQLAlchemy's."""


def storage_url(environ: dict, root: Path) -> str:
    return environ.get(STORAGE_VARIABLE) or f"sqlite:///{(root / DEFAULT_STORAGE).resolve()}"


def shown(url: str) -> str:
    """The storage URL without its password, for a log line."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class HeartbeatStorage(optuna.storages.RDBStorage):
    """Optuna's database storage whose heartbeats outlast a database that is away for a moment (a restart, a
    dropped connection). Optuna writes a running trial's heartbeats from a thread of its own that handles no
    error: one failed write would end it with a traceback, and the trial, still running, would send no more
    and be failed by another worker after the grace period. A missed heartbeat is one warning line instead,
    and the next one reconnects (tests/unit/test_search_space.py; the PostgreSQL restart in
    tests/integration/test_team_stack.py)."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except DATABASE_ERRORS as exc:
            cause = database_error(exc)  # SQLAlchemy's error, which wraps the driver's
            log.warning("a heartbeat of a running trial did not reach the study database (%s); the next one "
                        "tries again", one_line(getattr(cause, "orig", None) or cause))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials (the last heartbeat older than the grace period), and a running trial that
        never sent one, once it is older than that. Its worker died between creating it and its first
        heartbeat (the database went away just then), and Optuna, which skips a trial without heartbeats,
        would count it as running for ever: the study would never end (the PostgreSQL restart in
        tests/integration/test_team_stack.py; tests/unit/test_search_space.py). A live trial sends its first
        heartbeat as it starts, so only a dead one is old without any."""
        from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel
        from optuna.storages._rdb.storage import _create_scoped_session

        stale = super()._get_stale_trial_ids(study_id)
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)  # Optuna stores naive UTC
        started_before = now - datetime.timedelta(seconds=self.grace_period)
        with _create_scoped_session(self.scoped_session) as session:
            never_beat = (session.query(TrialModel.trial_id)
                          .outerjoin(TrialHeartbeatModel, TrialHeartbeatModel.trial_id == TrialModel.trial_id)
                          .filter(TrialModel.study_id == study_id, TrialModel.state == TrialState.RUNNING,
                                  TrialHeartbeatModel.trial_id.is_(None),
                                  TrialModel._datetime_start_utc < started_before).all())
        return stale + [trial_id for (trial_id,) in never_beat]


def open_storage(url: str, on_dead_trial: Callable[[FrozenTrial], None], heartbeat: float, create: bool = True
                 ) -> optuna.storages.RDBStorage:
    """The study database at ``url``, with a heartbeat every ``heartbeat`` seconds; a dead trial is queued again
    (up to :data:`MAX_RETRIES` times) and handed to ``on_dead_trial``. Without ``create``, a SQLite file that
    is not there is an error, not a new empty database. One that cannot be opened is one line naming it."""
    try:
        from sqlalchemy.engine import make_url

        shown_url, database = shown(url), make_url(url).database
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:  # the URL may hold a password: not shown
        raise SearchError(f"{STORAGE_VARIABLE} is not a database URL SQLAlchemy reads ({one_line(exc)})") from None
    if not create and url.startswith("sqlite") and database and not Path(database).is_file():
        raise SearchError(f"no study database at {database}: `make tune` runs the study")
    try:
        return _open_storage(url, on_dead_trial, heartbeat)
    except (*DATABASE_ERRORS, ImportError) as exc:  # no such driver or host, a file SQLite cannot open
        cause = database_error(exc)
        raise SearchError(f"cannot open the study database {shown_url} ({STORAGE_VARIABLE}, else {DEFAULT_STORAGE} "
                          f"in the project): {one_line(getattr(cause, 'orig', None) or cause)}") from None


def _open_storage(url: str, on_dead_trial: Callable[[FrozenTrial], None], heartbeat: float
                  ) -> optuna.storages.RDBStorage:
    grace = GRACE_HEARTBEATS * heartbeat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)

    storage = None

    def dead(study: optuna.Study, trial: FrozenTrial) -> None:
        log.warning("trial %d sent no heartbeat for %g s: failed, and queued again", trial.number,
                    storage.grace_period)  # the study's own (open_study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry(study, trial)
        on_dead_trial(trial)

    # SQLite: wait for a writer rather than fail at once; a server: test a pooled connection before use, so a
    # restarted database costs a reconnection, not the worker (nor a trial's heartbeat: HeartbeatStorage).
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(1, 6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = HeartbeatStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                           grace_period=grace, heartbeat_stale_trial_callback=dead)
                return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers starting together on a new database all create its tables; PostgreSQL lets one win and
            # fails the others (a duplicate type name). The tables exist then: try again.
            if attempt == 5:
                raise
            time.sleep(0.2 * attempt + random.random() * 0.3)


class _SeededPerTrial:
    """A sampler whose random draws for a trial come from the seed and the trial's number alone: workers that
    start with one seed would otherwise draw the same points, and a study run by one worker or by four draws
    the same random points for the same trial numbers (TPE's later choices also depend on which trials have
    finished when a trial starts)."""

    def __init__(self, *args, seed: int, **kwargs):
        super().__init__(*args, seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        seed = (self._base_seed * 1_000_003 + trial.number) % 2**32
        for holder in (self, getattr(self, "_random_sampler", None)):  # TPE draws its first trials with one
            if holder is not None:
                holder._rng.rng.seed(seed)
        super().before_trial(study, trial)


class _TPE(_SeededPerTrial, optuna.samplers.TPESampler):
    pass


class _Random(_SeededPerTrial, optuna.samplers.RandomSampler):
    pass


class _Grid(_SeededPerTrial, optuna.samplers.GridSampler):
    """Optuna's grid, where a failed trial does not use up its point. Optuna counts a point visited once a
    trial of it ends in any state: a worker stopped in mid-trial (Ctrl-C, SIGTERM, the MLflow server away)
    would leave its point never run and, started again, run another point twice. Here a point is done once
    a trial of it completes or is pruned, or once it failed ``1 + MAX_RETRIES`` times (as a dead trial's
    retries end); a point a running or queued trial holds is taken last, as Optuna takes it."""

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        done, held, failures = set(), set(), collections.Counter()
        for trial in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if "grid_id" not in trial.system_attrs or not self._same_search_space(trial.system_attrs["search_space"]):
                continue
            point = trial.system_attrs["grid_id"]
            if trial.state in FINISHED:
                done.add(point)
            elif trial.state == TrialState.FAIL:
                failures[point] += 1
            else:  # running, or waiting: a dead trial queued again
                held.add(point)
        done |= {point for point, failed in failures.items() if failed > MAX_RETRIES}
        todo = set(range(self._n_min_trials)) - done
        return sorted(todo - held) or sorted(todo)


def sampler(search: Search) -> optuna.samplers.BaseSampler:
    if search.sampler == "grid":
        return _Grid(search.grid(), seed=search.seed)
    if search.sampler == "random":
        return _Random(seed=search.seed)
    return _TPE(seed=search.seed)


def pruner(search: Search) -> optuna.pruners.BasePruner:
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    return optuna.pruners.NopPruner()


def open_study(search: Search, storage: optuna.storages.BaseStorage, create: bool = True
               ) -> tuple[optuna.Study, bool]:
    """The search's study, created (where ``create``) if no worker created it yet; and whether this call created
    it. A study of the same name from another search space is refused."""
    try:
        if not create:
            raise optuna.exceptions.DuplicatedStudyError()
        study = optuna.create_study(storage=storage, study_name=search.study, direction="maximize",
                                    sampler=sampler(search), pruner=pruner(search))
        study.set_user_attr(HEARTBEAT, search.heartbeat)
        study.set_user_attr(SEARCH_DIGEST, search.digest)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        try:
            study = optuna.load_study(storage=storage, study_name=search.study, sampler=sampler(search),
                                      pruner=pruner(search))
        except KeyError:
            raise SearchError(f"no study {search.study!r} in the study database: `make tune` runs it") from None
    digest = wait_for_attr(study, SEARCH_DIGEST)
    if digest != search.digest:
        raise SearchError(f"study {search.study!r} was created from another search space or params.yaml (the "
                          "train and data keys the search does not set); give the study a new name in the search file")
    beat = study.user_attrs.get(HEARTBEAT)
    if beat is not None and beat != search.heartbeat and isinstance(storage, optuna.storages.RDBStorage):
        # a worker that beat slower than the others wait for would have its live trials failed and run again
        log.info("study %r beats every %g s, as its creator set (not the search file's %g s)", search.study, beat,
                 search.heartbeat)
        storage.heartbeat_interval, storage.grace_period = beat, GRACE_HEARTBEATS * beat
    return study, False


def wait_for_attr(study: optuna.Study, key: str, timeout: float = 60.0) -> str:
    """A user attribute the study's creator sets right after creating it."""
    deadline = time.monotonic() + timeout
    while (value := study.user_attrs.get(key)) is None:
        if time.monotonic() > deadline:
            raise SearchError(f"study {study.study_name!r} has no {key} after {timeout:.0f} s: its creator "
                              "stopped before setting it up; give the study a new name in the search file")
        time.sleep(0.5)
    return value


def counts(study: optuna.Study) -> collections.Counter:
    return collections.Counter(trial.state for trial in study.get_trials(deepcopy=False))


def check_not_surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> None:
    """Raise StudyFull if ``n_trials`` trials numbered before ``trial`` are finished or running: two workers
    asked for the last trial at once, and this one came second."""
    ahead = [t for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
             if t.number < trial.number]
    if len(ahead) >= n_trials:
        raise StudyFull(f"the study had its {n_trials} trials when trial {trial.number} was asked for")


def database_error(exc: Exception) -> BaseException:
    """The database's own error behind what Optuna raised when it lost the study's database: Optuna words any
    database error as "An exception is raised during the commit ... invalid data" (its cause is the real
    one), and failing twice as a trial ends, raises an UnboundLocalError of its own from a ``finally`` that
    reads a name its ``except`` never bound (its context is the error). Any other exception is itself, an
    UnboundLocalError raised while handling another error too."""
    if isinstance(exc, UnboundLocalError) and isinstance(exc.__context__, DATABASE_ERRORS):
        exc = exc.__context__
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        return exc.__cause__ or exc
    return exc


def work(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int,
         poll: float, on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> int:
    """Run trials until the study holds ``n_trials`` finished ones; returns how many this worker ran. While the
    others' running trials would make up the number, wait: one of them may die and be queued again."""
    taken: list[int] = []

    def guarded(trial: optuna.Trial) -> float:
        check_not_surplus(study, trial, n_trials)
        try:
            value = objective(trial)
        except Exception:  # a report or an attribute written to the trial once it was failed, or the objective's
            if not taken_over(trial):
                raise
        else:
            if not taken_over(trial):
                return value
        taken.append(trial.number)
        raise TrialTakenOver(f"trial {trial.number}")

    ran = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        state = counts(study)
        finished = sum(state[s] for s in FINISHED)
        if finished >= n_trials:
            return ran
        if finished + state[TrialState.RUNNING] >= n_trials:
            time.sleep(poll)
            continue
        try:
            study.optimize(guarded, n_trials=1, catch=(StudyFull,), callbacks=[on_trial] if on_trial else None)
        except Exception as exc:
            if taken:  # Optuna then fails to record the trial another worker ended, in an error of its own
                log.warning("trial %d was failed by another worker, as this one sent no heartbeat for the grace "
                            "period (paused, or cut off from the study database): its result is dropped, and it "
                            "runs again", taken.pop())
                continue
            if isinstance(exc, (UnboundLocalError, optuna.exceptions.StorageInternalError)):
                raise database_error(exc) from None
            raise
        ran += 1


def ranked(study: optuna.Study) -> list[Scored]:
    """The complete trials, best validation accuracy first; among equals, the earlier trial."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [Scored(dict(t.user_attrs["point"]), t.value, t.number)
            for t in sorted(complete, key=lambda t: (-t.value, t.number))]
