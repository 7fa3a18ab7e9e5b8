"""Run one pipeline stage as dvc.yaml does: `python -m pipeline STAGE [OPTIONS]`.

`python -m pipeline STAGE --help` shows a stage's own options.

The stage's imports (torch, MLflow, SQLAlchemy, matplotlib) create about a
million objects that live as long as the process, and CPython's cyclic garbage
collector would traverse them again and again while they are being created. So
the stage is imported with the collector paused; what the imports made is then
frozen out of its sight (``gc.freeze``), and the collector runs as usual for the
stage's own work. Importing evaluate's modules on the pinned kernels takes
2.0 s against 3.6 s without, 1.6 s of its 3.4 s stage: neither Python nor
the libraries offer a cheaper way to import them.

Before all of that, the process starts again with the numeric kernels pinned
(:mod:`pipeline.kernels`), so a stage writes the same bytes on any x86-64 CPU.
"""

from __future__ import annotations

import sys

from pipeline.kernels import ensure_pinned

if __name__ == "__main__":  # before torch, numpy or scipy can load
    ensure_pinned(sys.orig_argv)

import ast
import contextlib
import gc
import importlib
from collections.abc import Iterator
from pathlib import Path

import click

STAGES = ("fetch", "preprocess", "train_scratch", "train_concise", "train_baseline", "evaluate", "report")
"""The stage modules of ``pipeline/``, one per stage of dvc.yaml."""

PROG_NAME = "python -m pipeline"


@contextlib.contextmanager
def imports_frozen() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block; then freeze every object the process holds
    (``gc.freeze``: the collector ignores them from now on) and let it run again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def summary(stage: str) -> str:
    """The first line of a stage module's docstring, read without importing the stage."""
    source = (Path(__file__).parent / f"{stage}.py").read_text()
    return (ast.get_docstring(ast.parse(source)) or "").splitlines()[0]


class Stages(click.Group):
    """A stage's module (and all it imports) is loaded only when that stage runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(STAGES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in STAGES:
            return None
        with imports_frozen():
            module = importlib.import_module(f"pipeline.{name}")
        # From here the process looks as `python -m pipeline.<stage>` would: MLflow takes a run's source
        # (`mlflow.source.name`) from sys.argv[0], so every run a stage opens names the stage's file, not this
        # launcher, without a tag passed at each start_run (test_tracking.py checks each run's source).
        if sys.argv[1:2] == [name]:
            sys.argv[:2] = [module.__file__]
        return module.main

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Stages"):
            formatter.write_dl([(stage, summary(stage)) for stage in STAGES])


HELP = """Run one pipeline stage as dvc.yaml does: `python -m pipeline STAGE [OPTIONS]`.

`python -m pipeline STAGE --help` shows a stage's own options. Every stage runs on the pinned numeric
kernels, so it writes the same bytes on any x86-64 CPU (`python -m pipeline.kernels` shows them)."""

cli = Stages(name="pipeline", help=HELP, no_args_is_help=True, subcommand_metavar="STAGE [ARGS]...")

if __name__ == "__main__":
    cli(prog_name=PROG_NAME)
