"""`python -m pipeline.reproduce_check`: the drift detection, and the command end to end on tiny DVC projects.

The real pipeline's pass case is what `make test` runs after pytest (two full
pipeline runs); here the command runs on small DVC projects whose one stage
writes either the same bytes every time or fresh random ones.
"""

import hashlib
import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

from support import PROJECT_ROOT, clean_env, run

if str(PROJECT_ROOT) not in sys.path:  # `pipeline/` is a folder of the project, not an installed package
    sys.path.insert(0, str(PROJECT_ROOT))
from pipeline.reproduce_check import Snapshot, declared_metrics, drift, take_snapshot  # noqa: E402

PLAIN = Snapshot({"models/concise.pt": "a" * 64, "models/scratch.pt": "b" * 64, "reports/eval/metrics.json": "c" * 64},
                 {"reports/eval/metrics.json": {"scratch": {"test_accuracy": 0.8332}, "concise": {"test_accuracy": 0.8332}}})


def test_identical_snapshots_have_no_drift():
    assert drift(PLAIN, Snapshot(dict(PLAIN.sha256), dict(PLAIN.metrics))) == []


def test_each_drifted_file_gets_one_line_naming_it():
    second = Snapshot(
        {"models/concise.pt": "a" * 64, "models/scratch.pt": "d" * 64, "reports/eval/metrics.json": "e" * 64,
         "models/extra.pt": "f" * 64},
        {"reports/eval/metrics.json": {"scratch": {"test_accuracy": 0.8331}, "concise": {"test_accuracy": 0.8332}}},
    )
    assert drift(PLAIN, second) == [
        "drift: models/extra.pt: written by the second run only",
        "drift: models/scratch.pt: sha256 bbbbbbbbbbbbbbbb != dddddddddddddddd",
        "drift: reports/eval/metrics.json: scratch.test_accuracy 0.8332 -> 0.8331",
    ]
    assert drift(second, PLAIN)[0] == "drift: models/extra.pt: written by the first run only"


def test_metrics_that_differ_only_in_bytes_are_still_drift():
    second = Snapshot({**PLAIN.sha256, "reports/eval/metrics.json": "0" * 64}, dict(PLAIN.metrics))
    assert drift(PLAIN, second) == ["drift: reports/eval/metrics.json: same values, different bytes"]


def test_snapshot_hashes_model_files_and_declared_metrics_only(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models/scratch.pt").write_bytes(b"weights")
    (tmp_path / "models/scratch_run.json").write_text('{"run_id": "changes every run"}')
    (tmp_path / "reports/eval").mkdir(parents=True)
    (tmp_path / "reports/eval/metrics.json").write_text('{"scratch": {"test_accuracy": 0.83}}')
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          evaluate:
            cmd: python evaluate.py
            metrics:
              - reports/eval/metrics.json:
                  cache: false
    """))
    assert declared_metrics(tmp_path) == ["reports/eval/metrics.json"]
    first = take_snapshot(tmp_path)
    assert set(first.sha256) == {"models/scratch.pt", "reports/eval/metrics.json"}
    assert first.metrics == {"reports/eval/metrics.json": {"scratch": {"test_accuracy": 0.83}}}
    assert first.sha256["models/scratch.pt"] == hashlib.sha256(b"weights").hexdigest()

    (tmp_path / "models/scratch.pt").write_bytes(b"weightz")
    (tmp_path / "models/scratch_run.json").write_text('{"run_id": "another"}')
    assert drift(first, take_snapshot(tmp_path)) == [
        f"drift: models/scratch.pt: sha256 {hashlib.sha256(b'weights').hexdigest()[:16]} != "
        f"{hashlib.sha256(b'weightz').hexdigest()[:16]}"
    ]


def test_help_describes_the_check():
    result = run([sys.executable, "-m", "pipeline.reproduce_check", "--help"], PROJECT_ROOT)
    assert "dvc repro --force" in result.stdout
    assert "--keep" in result.stdout and "--project" in result.stdout


# --- end to end on tiny DVC projects -------------------------------------------------------------

STAGE_SCRIPT = """\
import json, os, pathlib, sys
random = sys.argv[1] == "random"
pathlib.Path("models").mkdir(exist_ok=True)
pathlib.Path("models/fixed.pt").write_bytes(b"fixed weights")
pathlib.Path("models/drifting.pt").write_bytes(os.urandom(16) if random else b"same weights")
pathlib.Path("models/run.json").write_text(json.dumps({"run_id": os.urandom(8).hex()}))
value = int.from_bytes(os.urandom(2), "big") if random else 7
pathlib.Path("metrics.json").write_text(json.dumps({"model": {"accuracy": value}}))
pathlib.Path("env.json").write_text(json.dumps({k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME")}))
"""


def tiny_project(path: Path, mode: str) -> Path:
    path.mkdir(parents=True)
    (path / "make.py").write_text(STAGE_SCRIPT)
    (path / "dvc.yaml").write_text(textwrap.dedent(f"""\
        stages:
          make:
            cmd: python make.py {mode}
            deps: [make.py]
            outs: [models, env.json]
            metrics:
              - metrics.json:
                  cache: false
    """))
    env = clean_env()
    run(["git", "init", "-q"], path, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "tiny"], path, env)
    return path


def reproduce_check(*args: str, env=None):
    return run([sys.executable, "-m", "pipeline.reproduce_check", *args], PROJECT_ROOT, env=env, check=False,
               timeout=300)


def test_reproducible_project_passes_and_leaves_the_users_store_alone(tmp_path):
    project = tiny_project(tmp_path / "steady", "fixed")
    user_store = f"sqlite:///{tmp_path / 'user-mlflow.db'}"
    # As if run from inside someone's `dvc exp run`: none of that may reach the copy.
    outer = clean_env(MLFLOW_TRACKING_URI=user_store, DVC_ROOT=str(tmp_path), DVC_EXP_NAME="outer-exp")
    result = reproduce_check("--project", str(project), "--keep", env=outer)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical" in result.stdout
    assert "models/drifting.pt" in result.stdout and "metrics.json" in result.stdout
    kept = Path(re.search(r"kept (\S+)", result.stderr).group(1))
    try:
        seen = json.loads((kept / "project/env.json").read_text())
        assert seen == {"MLFLOW_TRACKING_URI": f"sqlite:///{kept / 'mlflow.db'}", "DVC_ROOT": str(kept / "project"),
                        "DVC_EXP_NAME": None}
        assert (kept / "repro-1.log").is_file() and (kept / "repro-2.log").is_file()
        assert "Running stage 'make'" in (kept / "repro-2.log").read_text()
    finally:
        shutil.rmtree(kept)
    assert not (project / "models").exists() and not (project / "dvc.lock").exists()
    assert not (tmp_path / "user-mlflow.db").exists()


def test_drifting_project_fails_naming_each_drifted_file(tmp_path):
    project = tiny_project(tmp_path / "drifting", "random")
    result = reproduce_check("--project", str(project))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("drift: metrics.json: model.accuracy ")
    assert lines[1].startswith("drift: models/drifting.pt: sha256 ")
    assert "2 of 3 file(s) differ" in result.stderr
    kept = re.search(r"kept (\S+)", result.stderr)
    assert kept is None


def test_failing_pipeline_is_an_error_not_a_pass(tmp_path):
    project = tiny_project(tmp_path / "broken", "fixed")
    (project / "make.py").write_text("raise SystemExit('stage failed on purpose')\n")
    result = reproduce_check("--project", str(project))
    assert result.returncode == 2
    assert "reproduce-check: error: `dvc repro` failed with exit code" in result.stderr
    assert "stage failed on purpose" in result.stderr
    assert result.stdout == ""


def test_outside_a_git_repository_is_an_error(tmp_path):
    result = reproduce_check("--project", str(tmp_path))
    assert result.returncode == 2
    assert "is not inside a git repository" in result.stderr
