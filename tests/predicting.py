"""Running `fmnist-predict` and checking its answers: shared by its unit and integration tests."""

import json
import re
import sys

from softmax_regression import CLASS_NAMES
from support import VENV_BIN, clean_env, run

N = 20  # test images written as picture files
TEXT_LINE = re.compile(r"^(?P<input>.+): " + ", ".join(
    rf"(?P<c{i}>[a-z -]+) (?P<p{i}>[01]\.\d{{3}})" for i in range(3)) + "$")


def predict(*args, cwd, module=False):
    cmd = [sys.executable, "-m", "softmax_regression.predict_cli"] if module else [str(VENV_BIN / "fmnist-predict")]
    return run([*cmd, *map(str, args)], cwd, env=clean_env(), check=False, timeout=300)


def predict_json(*args, cwd):
    result = predict("--json", *args, cwd=cwd)
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
