"""What every stage command shares: logging set-up and turning failures into one clear line."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

import click

from softmax_regression.params import ParamsError

EXIT_FAILURE = 1
EXIT_BAD_PARAMS = 2

params_option = click.option(
    "--params", "params_path", default="params.yaml", show_default=True,
    type=click.Path(dir_okay=False), help="The params file to read.",
)


def stage_main(name: str) -> Callable:
    """Wrap a stage body: INFO logging, exit 2 with one line on bad params, exit 1 on any other failure."""

    def decorate(body: Callable) -> Callable:
        @functools.wraps(body)
        def run(*args, **kwargs):
            logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s", stream=sys.stderr)
            try:
                return body(*args, **kwargs)
            except ParamsError as exc:
                click.echo(f"{name}: error: {exc}", err=True)
                sys.exit(EXIT_BAD_PARAMS)
            except KeyboardInterrupt:
                click.echo(f"{name}: interrupted; no output was written", err=True)
                sys.exit(130)
            except click.exceptions.Exit:
                raise
            except Exception as exc:  # one line for the user; the traceback only with -v
                if logging.getLogger().isEnabledFor(logging.DEBUG):
                    logging.exception("traceback")
                click.echo(f"{name}: error: {exc}", err=True)
                sys.exit(EXIT_FAILURE)

        return run

    return decorate
