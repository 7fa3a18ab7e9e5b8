"""Helpers for tests that run the real pipeline in a temporary git copy of the project."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # `pipeline/` is a folder of the project, not an installed package
    sys.path.insert(0, str(PROJECT_ROOT))
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
VENV_BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a stage sees: the venv first on PATH, telemetry off, no outside tracking URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def copy_project(dest: Path) -> Path:
    """A fresh git repository at ``dest`` holding the project's files, committed, with no DVC outs
    and no dvc.lock (so the first ``dvc repro`` runs every stage): what a clone would hold."""
    from pipeline.reproduce_check import copy_project as copy_committed

    dest.mkdir(parents=True, exist_ok=True)
    copy_committed(PROJECT_ROOT, dest)
    env = clean_env()
    if (dest / "dvc.lock").exists():
        run(["git", "rm", "-q", "dvc.lock"], dest, env)
        run(["git", "commit", "-q", "-m", "no dvc.lock"], dest, env)
    run(["git", "config", "user.name", "test"], dest, env)
    run(["git", "config", "user.email", "test@example.invalid"], dest, env)
    return dest


STAGE_RAN = re.compile(r"Running stage '([\w@.-]+)'")
STAGE_SKIPPED = re.compile(r"Stage '([\w@.-]+)' didn't change, skipping")


def stages_ran(dvc_output: str) -> list[str]:
    return STAGE_RAN.findall(dvc_output)


def stages_skipped(dvc_output: str) -> list[str]:
    return STAGE_SKIPPED.findall(dvc_output)


def set_param(project: Path, dotted_key: str, value) -> None:
    """Change one key of the project's params.yaml."""
    import yaml

    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    section, key = dotted_key.split(".")
    params.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
