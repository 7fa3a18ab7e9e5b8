"""`make ui`: the MLflow UI on the project's store, and the URL that opens the experiment on its training runs.

Runs `mlflow ui` with one uvicorn worker and without MLflow's job consumers
(the GenAI jobs: trace scoring, issue detection), which this project does not
use: 2 processes instead of 15. The URL carries `workflowType=machine_learning`,
because MLflow 3.17's UI opens every experiment on its GenAI overview and
reads neither the experiment's kind tag nor anything else that says otherwise.

Where MLFLOW_TRACKING_URI names a server, no UI is started: the URL on that
server is printed. A port already in use stops it at once: choose another
with --port.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import click
import mlflow

from pipeline._cli import load_stage_params, params_option, stage_main, verbose_option
from pipeline.stage_runs import open_experiment

log = logging.getLogger(__name__)

PARAMS = ("tracking.experiment",)
START_TIMEOUT = 120.0
"""Seconds the UI may take to answer its health check (it migrates an old store first)."""


def runs_url(base: str, experiment_id: str) -> str:
    """The URL of the experiment's training-runs table in the MLflow UI at ``base``."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_command(store_uri: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The `mlflow ui` command line and environment: one worker, no job consumers, no line per request."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri, "--host", host,
               "--port", str(port), "--workers", "1", "--uvicorn-opts", "--no-access-log"]
    return command, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def check_port_free(host: str, port: int) -> None:
    """Raise unless ``mlflow ui`` could listen on ``host``:``port``: bind there as uvicorn will (every address the
    host resolves to, SO_REUSEADDR, IPv6 sockets IPv6-only), then let go.

    Checked before starting it, because a server already there (a second `make ui`, another project's MLflow UI)
    answers the health check before ours has even failed to bind: its URL would open the other store."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        with contextlib.ExitStack() as sockets:  # all held at once, as uvicorn holds them
            for family, kind, proto, _, address in dict.fromkeys(addresses):
                sock = sockets.enter_context(socket.socket(family, kind, proto))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            other = port + 1 if port < 65535 else port - 1
            raise RuntimeError(f"port {port} of {host} is in use (another `make ui`, or another MLflow UI?): "
                               f"choose another, `python -m pipeline.ui --port {other}`") from None
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def local_base(host: str, port: int) -> str:
    """Where this machine reaches a server listening on ``host``: every interface's address (0.0.0.0, ::) on
    loopback, an IPv6 address in brackets (``http://[::1]:5000``)."""
    reached = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{reached}]:{port}" if ":" in reached else f"http://{reached}:{port}"


def wait_until_up(base: str, process: subprocess.Popen, timeout: float = START_TIMEOUT) -> None:
    """Wait until ``process`` (the `mlflow ui` just started) answers at ``base``; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with code {process.returncode} before it answered at {base}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    # The port was free a moment ago, but another server may have taken it since: an answer while
                    # ours has already died is that server's.
                    if process.poll() is not None:
                        raise RuntimeError(f"mlflow ui exited with code {process.returncode}; another server answers "
                                           f"at {base}: choose another --port")
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow ui did not answer at {base} within {timeout:.0f} s")


@click.command(help=__doc__)
@params_option
@click.option("--host", default="127.0.0.1", show_default=True, help="The address the UI listens on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), help="Its port.")
@verbose_option
@stage_main("ui", pinned=False)
def main(params_path: str, host: str, port: int) -> None:
    params = load_stage_params(params_path, PARAMS)
    experiment_id = open_experiment(params["tracking"]["experiment"])
    store_uri = mlflow.get_tracking_uri()
    if store_uri.startswith(("http://", "https://")):
        click.echo(f"MLflow UI: {runs_url(store_uri, experiment_id)}")
        return

    check_port_free(host, port)
    base = local_base(host, port)
    command, env = ui_command(store_uri, host, port)
    log.debug("starting %s", " ".join(command))
    process = subprocess.Popen(command, env=env)
    try:
        wait_until_up(base, process)
        click.echo(f"MLflow UI of {store_uri}\n  open {runs_url(base, experiment_id)}\n  Ctrl-C stops it.")
        if process.wait() != 0:  # it crashed or was killed; its own log above says why
            raise RuntimeError(f"mlflow ui exited with code {process.returncode}")
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # it ignored the request to stop: nothing is left behind all the same
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
