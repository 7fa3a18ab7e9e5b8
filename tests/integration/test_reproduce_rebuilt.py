"""`reproduce_check --rebuilt` on a real built project: a workspace built elsewhere, judged per out."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from support import PROJECT_ROOT, run


def perturbed_copy(project: Path, dest: Path, shift: float) -> Path:
    """The project's outs copied to ``dest``, every weight of the scratch model moved by ``shift``."""
    for out in ("data", "models", "reports"):
        shutil.copytree(project / out, dest / out)
    path = dest / "models/scratch.pt"
    if not shift:
        return dest
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state"]["W"] += shift
    torch.save(checkpoint, path)
    return dest


@pytest.mark.parametrize("shift, code, expected", [
    (0.0, 0, "holds exactly the committed outs"),
    (1e-7, 0, "within tolerance: models/scratch.pt (out of train_scratch): weights differ by at most 1"),
    (1e-2, 1, "drift: models/scratch.pt (out of train_scratch): weights differ by at most 0.01"),
])
def test_reproduce_check_judges_a_workspace_built_elsewhere(fast_project, tmp_path, env, shift, code, expected):
    project, _ = fast_project
    rebuilt = perturbed_copy(project, tmp_path / "rebuilt", shift)
    result = run([sys.executable, "-m", "pipeline.ci.reproduce_check", "--project", str(project), "--rebuilt",
                  str(rebuilt)], PROJECT_ROOT, env=env, check=False)
    assert result.returncode == code, result.stdout + result.stderr
    assert expected in result.stdout
    if shift:  # only the model moved: every other out is the committed bytes
        assert len(result.stdout.strip().splitlines()) == 1 + (code == 0)
