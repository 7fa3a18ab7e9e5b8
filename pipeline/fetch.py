"""DVC stage `fetch`: put the four verified Fashion-MNIST IDX files into data/raw/."""

import logging

import click

from pipeline import paths
from pipeline._cli import load_stage_params, params_option, stage_main, verbose_option
from softmax_regression.data.sources import fetch_fashion_mnist
from softmax_regression.params import SETTINGS

log = logging.getLogger(__name__)

PARAMS = ()
"""No param shapes fetch's output: the official files, each verified by SHA-256. It reads only
:data:`~softmax_regression.params.SETTINGS` (where to look), which DVC does not track."""


@click.command(help=__doc__ + "\n\nSources, in order: data/raw/ if already verified, data.system_dir "
               "(Debian's dataset-fashion-mnist), data.local_dir, then data.mirrors. Every file is "
               "checked against the SHA-256 of the official decompressed release.")
@params_option
@verbose_option
@click.option("--no-progress", is_flag=True, help="Hide download progress bars.")
@stage_main("fetch")
def main(params_path: str, no_progress: bool) -> None:
    data = load_stage_params(params_path, PARAMS, settings=SETTINGS)["data"]
    result = fetch_fashion_mnist(
        paths.RAW_DIR,
        system_dir=data["system_dir"],
        local_dir=data["local_dir"],
        mirrors=data["mirrors"],
        timeout=data["timeout"],
        retries=data["retries"],
        deadline=data["deadline"],
        progress=not no_progress,
    )
    log.info("data/raw/ holds verified Fashion-MNIST from %s", result.source)


if __name__ == "__main__":
    main()
