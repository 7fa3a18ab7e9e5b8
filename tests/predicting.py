"""Running `fmnist-predict` and checking its answers: shared by its unit and integration tests."""

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import warnings

from softmax_regression import CLASS_NAMES
from support import VENV_BIN, clean_env, run

N = 20  # test images written as picture files
TEXT_LINE = re.compile(r"^(?P<input>.+): " + ", ".join(
    rf"(?P<c{i}>[a-z -]+) (?P<p{i}>[01]\.\d{{3}})" for i in range(3)) + "$")


def predict(*args, cwd, module=False):
    """The installed `fmnist-predict` (or ``python -m softmax_regression.predicting.cli``) in a process of its own."""
    cmd = [sys.executable, "-m", "softmax_regression.predicting.cli"] if module else [str(VENV_BIN / "fmnist-predict")]
    return run([*cmd, *map(str, args)], cwd, env=clean_env(), check=False, timeout=300)


def predict_side_by_side(*calls, cwd):
    """Each call's arguments to the installed `fmnist-predict`, all started at once, each in a process of its
    own: their answers as :func:`predict` gives them, in order."""
    processes = [subprocess.Popen([str(VENV_BIN / "fmnist-predict"), *map(str, args)], cwd=cwd, env=clean_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in calls]
    try:
        outputs = [p.communicate(timeout=300) for p in processes]
        return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(processes, outputs)]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


PYTHON_DEFAULT_IGNORED = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
"""The warnings a Python started without ``-W`` does not print (outside ``__main__``)."""


class StderrOfAProcess(logging.Handler):
    """Writes a record as Python's last resort does in a process whose logging nobody configured: the
    message alone, on the stderr of the moment (here the runner's)."""

    def __init__(self):
        super().__init__(logging.WARNING)

    def emit(self, record):
        sys.stderr.write(self.format(record) + "\n")


def show_on_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def as_a_fresh_process(cwd):
    """This interpreter made to look, for one call, like the process :func:`predict` starts: working
    directory ``cwd``, the environment of :func:`support.clean_env`, MLflow pointed nowhere, and what such a
    process would print besides the command's own output (warnings under Python's default filters, log
    records at WARNING and above) written to the stderr of the moment. Afterwards all of it is as it was,
    including what the call itself changes: MLflow's tracking URI (``mlflow.set_tracking_uri`` also sets
    ``MLFLOW_TRACKING_URI``), the variables ``tracking.configure`` sets and the level of the ``mlflow`` logger."""
    import mlflow  # its loggers' streams are set up outside the runner's, as in the rest of the session
    import pytest
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    environment = dict(os.environ)
    mlflow_logger = logging.getLogger(mlflow.__name__)
    mlflow_level = mlflow_logger.level
    last_resort = StderrOfAProcess()
    try:
        with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
            mp.chdir(cwd)
            mp.setattr(tracking_utils, "_tracking_uri", None)
            mp.setattr(registry_utils, "_registry_uri", None)
            os.environ.clear()
            os.environ.update(clean_env())
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for category in PYTHON_DEFAULT_IGNORED:
                warnings.simplefilter("ignore", category)
            warnings.showwarning = show_on_stderr
            logging.getLogger().addHandler(last_resort)
            yield
    finally:
        logging.getLogger().removeHandler(last_resort)
        mlflow_logger.setLevel(mlflow_level)
        os.environ.clear()
        os.environ.update(environment)


def predict_in_process(*args, cwd) -> subprocess.CompletedProcess:
    """`fmnist-predict ARGS` run by click's ``CliRunner`` in this interpreter (:func:`as_a_fresh_process`),
    answered as :func:`predict` answers: exit code, stdout and stderr apart. It saves the second and a half a
    process takes to import torch; an exception the command lets escape fails the test here, where a process
    would print its traceback."""
    from click.testing import CliRunner

    from softmax_regression.predicting.cli import main

    argv = [str(arg) for arg in args]
    with as_a_fresh_process(cwd):
        result = CliRunner().invoke(main, argv, prog_name="fmnist-predict", catch_exceptions=False)
    return subprocess.CompletedProcess(["fmnist-predict", *argv], result.exit_code, result.stdout, result.stderr)


def predict_json(*args, cwd, in_process=False):
    result = (predict_in_process if in_process else predict)("--json", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fmnist-predict: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def check_ranking(entry, k=3):
    top = entry["top"]
    assert len(top) == k
    classes = [t["class"] for t in top]
    probabilities = [t["probability"] for t in top]
    assert len(set(classes)) == k and set(classes) <= set(CLASS_NAMES)
    assert all(0 <= p <= 1 for p in probabilities)
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1 + 1e-5
    return classes[0]
