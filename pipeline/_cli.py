"""What every stage command shares: its params, logging set-up, and turning failures into one clear line."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from typing import Callable

import click

from pipeline import kernels
from softmax_regression.errors import failure_line
from softmax_regression.params import SETTINGS, ParamsError, load_params

EXIT_FAILURE = 1
EXIT_BAD_PARAMS = 2

params_option = click.option(
    "--params", "params_path", default="params.yaml", show_default=True,
    type=click.Path(dir_okay=False), help="The params file to read.",
)
verbose_option = click.option(
    "-v", "--verbose", is_flag=True, help="Log debug detail, and a traceback with any error.",
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as SIGINT is: the stage stops, writes nothing and ends its MLflow runs."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _restore_hint() -> str:
    """Under ``dvc repro`` DVC removed the stage's outputs before running it; say how to get them back."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return ""
    return f"; `dvc checkout {stage}` restores its previous outputs (DVC removed them before running it)"


class StageParams(dict):
    """One params section as a stage sees it: only the keys the stage declares (in dvc.yaml too)."""

    def __init__(self, section: str, values: dict):
        super().__init__(values)
        self.section = section

    def __missing__(self, key: str):
        raise KeyError(f"params key {self.section}.{key} is not among this stage's declared params "
                       "(its PARAMS and its params in dvc.yaml)")


def load_stage_params(path: str, declared: tuple[str, ...], settings: tuple[str, ...] = ()) -> dict[str, StageParams]:
    """Validate the whole params file, then hand out only what the stage declares.

    ``declared`` holds sections (``train``) and single keys (``tracking.experiment``),
    exactly as the stage's ``params:`` in dvc.yaml, so a stage cannot read a
    param DVC does not know it depends on (a test compares the two lists).
    ``settings`` are keys of :data:`~softmax_regression.params.SETTINGS` only: read, but not
    tracked by DVC, because they cannot change an output.
    """
    untracked = [key for key in settings if key not in SETTINGS]
    if untracked:
        raise ValueError(f"{', '.join(untracked)} shape outputs: declare them as PARAMS, not settings")
    params = load_params(path)
    view: dict[str, StageParams] = {}
    for entry in declared + settings:
        section, _, key = entry.partition(".")
        if section not in view:
            view[section] = StageParams(section, {})
        if key:
            view[section][key] = params[section][key]
        else:
            view[section].update(params[section])
    return view


def stage_main(name: str, pinned: bool = True) -> Callable:
    """Wrap a stage body: INFO logging (DEBUG and tracebacks with ``--verbose``), SIGTERM handled as
    SIGINT, and every failure turned into one line: exit 2 on bad params, 130 when interrupted, 1 on
    anything else. The command must carry :data:`verbose_option`.

    ``pinned``: the command writes outputs whose bytes dvc.lock records, so it refuses to run on
    other kernels than :mod:`pipeline.kernels`' (every stage; not ``tune``, whose experiments run
    the stages through the launcher)."""

    def decorate(body: Callable) -> Callable:
        @functools.wraps(body)
        def run(*args, verbose: bool = False, **kwargs):
            logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=f"{name}: %(message)s",
                                stream=sys.stderr)
            if not verbose:  # the libraries' debug chatter stays out of a stage's log
                for noisy in ("alembic", "sqlalchemy", "urllib3", "matplotlib", "PIL", "git", "filelock"):
                    logging.getLogger(noisy).setLevel(logging.WARNING)
            signal.signal(signal.SIGTERM, _terminate)
            if pinned:
                kernels.warn_if_not_portable()
            try:
                if pinned:
                    kernels.check_chosen()
                return body(*args, **kwargs)
            except ParamsError as exc:
                click.echo(f"{name}: error: {exc}", err=True)
                sys.exit(EXIT_BAD_PARAMS)
            except KeyboardInterrupt as exc:
                how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
                if getattr(exc, "outputs_written", False):  # held off until the outputs were in place
                    rerun = "; DVC records no stage that failed: `dvc repro` runs it again" if os.environ.get("DVC_STAGE") else ""
                    click.echo(f"{name}: {how} once its outputs were written{rerun}", err=True)
                else:
                    click.echo(f"{name}: {how}; no output was written{_restore_hint()}", err=True)
                sys.exit(130)
            except click.exceptions.Exit:
                raise
            except Exception as exc:  # one line for the user; the traceback only with -v
                if verbose:
                    logging.exception("traceback")
                click.echo(f"{name}: error: {failure_line(exc)}{_restore_hint()}", err=True)
                sys.exit(EXIT_FAILURE)

        return run

    return decorate
