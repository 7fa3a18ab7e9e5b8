"""Check a params file before DVC reads it: `python -m pipeline.ci.check_params [PARAMS]` (`make pipeline` runs it).

DVC parses params.yaml when `dvc repro` starts, before any stage can check it:
a file of nested YAML aliases makes DVC expand billions of nodes (and be
killed for memory), and a key given twice reads differently in DVC and in a
stage. This reads the file as the stages do (no anchors or aliases, no
duplicate keys, every value validated) and says in one line what is wrong.
Exit 0 when the file is valid, 2 when it is not.
"""

import sys

import click

from pipeline._cli import EXIT_BAD_PARAMS
from softmax_regression.params import ParamsError, load_params


@click.command(help=__doc__)
@click.argument("params_path", default="params.yaml", type=click.Path(dir_okay=False))
def main(params_path: str) -> None:
    try:
        load_params(params_path)
    except ParamsError as exc:
        click.echo(f"check-params: error: {exc}", err=True)
        sys.exit(EXIT_BAD_PARAMS)
    click.echo(f"check-params: {params_path} is valid")


if __name__ == "__main__":
    main()
