"""`python -m pipeline.ci.lock_check`: is the committed dvc.lock current for the code, params and commands?

Real git and DVC on a tiny two-stage project (built once, committed, then
cloned afresh by each test, so no outs and no DVC cache: what CI sees), and
once on a clone of this project itself. No training, no `dvc repro` per test.

The command runs in this interpreter (click's runner), the `dvc status` it asks
in a process of its own; one test runs the command as a process, as CI does.
DVC's own API sets up the tiny project, in this interpreter too: each `dvc`
process would spend a third of a second importing DVC.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.ci.dvc_files import read_stages  # noqa: E402
from pipeline.ci.lock_check import stage_outs, stale_entries  # noqa: E402  (support puts the project on sys.path)
from support import PROJECT_ROOT, clean_env, clean_environment, clone_project, dvc_repo, run

CURRENT = "lock-check: dvc.lock matches the code, params and commands of every stage"


MAKE = """\
import pathlib
import lib
pathlib.Path("models").mkdir(exist_ok=True)
pathlib.Path("models/x.pt").write_bytes(lib.WEIGHTS)
pathlib.Path("metrics.json").write_text('{"accuracy": 0.5}')
"""

USE = """\
import pathlib
import lib
pathlib.Path("summary.txt").write_text(str(len(pathlib.Path("models/x.pt").read_bytes())))
"""

PARAMS = """\
make:
  lr: 0.1
  seed: 0
  unused: 1       # in params.yaml but declared by no stage
use:
  k: 1
  name: full
"""

PIPELINE = """\
stages:
  make:
    cmd: python make.py
    deps: [make.py, lib.py]
    params: [make.lr, make.seed]
    outs: [models/x.pt]
    metrics:
      - metrics.json:
          cache: false
  use:
    cmd: python use.py
    deps: [use.py, lib.py, models/x.pt]
    params: [use]
    outs: [summary.txt]
"""


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """The tiny project, `dvc repro` run once and dvc.lock committed."""
    path = tmp_path_factory.mktemp("lock-check") / "origin"
    path.mkdir()
    files = {"make.py": MAKE, "use.py": USE, "lib.py": 'WEIGHTS = b"fixed weights"\n', "params.yaml": PARAMS,
             "dvc.yaml": PIPELINE}
    for name, text in files.items():
        (path / name).write_text(text)
    env = clean_env()
    run(["git", "init", "-q"], path, env)
    with dvc_repo(path, init=True) as repo:
        repo.reproduce()
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "tiny project"], path, env)
    with dvc_repo(path) as repo:
        assert repo.status() == {}
    return path


@pytest.fixture
def project(origin, tmp_path) -> Path:
    """A fresh clone of the tiny project: committed dvc.lock, no outs, no DVC cache."""
    dest = tmp_path / "project"
    run(["git", "clone", "-q", str(origin), str(dest)], tmp_path, clean_env())
    assert not (dest / "models/x.pt").exists() and not (dest / ".dvc/cache").exists()
    return dest


def lock_check(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline.ci.lock_check --project PROJECT ARGS` run by click's runner in the environment of
    :func:`support.clean_env`, answered as :func:`support.run` answers."""
    from click.testing import CliRunner

    from pipeline.ci.lock_check import main

    argv = ["--project", str(project), *args]
    with clean_environment():
        result = CliRunner().invoke(main, argv, prog_name="python -m pipeline.ci.lock_check", catch_exceptions=False)
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)


def assert_stale(result: subprocess.CompletedProcess, lines: list[str]) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == lines
    assert (f"lock-check: dvc.lock is stale ({len(lines)} change(s)); run `dvc repro` and commit dvc.lock"
            in result.stderr)


def assert_current(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [CURRENT]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


# --- current -----------------------------------------------------------------------------------

def test_a_fresh_clone_is_current_without_outs_or_cache(project):
    assert_current(lock_check(project))


def test_outs_are_not_its_business(project):
    env = clean_env()
    with dvc_repo(project) as repo:
        repo.reproduce()  # rebuilt from the (unchanged) code
    assert (project / "models/x.pt").is_file()
    # A data file edited by hand is an out of `make` and a dep of `use`: still not a stale dvc.lock.
    (project / "models/x.pt").write_bytes(b"tampered")
    (project / "metrics.json").write_text('{"accuracy": 1.0}')
    assert_current(lock_check(project))
    # Outs and DVC cache deleted, as in a fresh clone.
    (project / "models/x.pt").unlink()
    (project / "summary.txt").unlink()
    run(["git", "clean", "-fdXq"], project, env)
    assert not (project / ".dvc/cache").exists()
    assert_current(lock_check(project))


def test_default_project_is_the_current_directory(project):
    """The command as CI runs it: a process of its own, in the project."""
    result = run([sys.executable, "-m", "pipeline.ci.lock_check"], project,
                 clean_env(PYTHONPATH=str(PROJECT_ROOT)), check=False)
    assert_current(result)


# --- stale ---------------------------------------------------------------------------------------

def test_a_modified_code_dep_names_its_path_and_stage(project):
    (project / "make.py").write_text(MAKE + "# a comment is a change too\n")
    assert_stale(lock_check(project), ["stale: make.py (modified); reruns make"])


def test_a_shared_code_dep_names_every_stage_that_lists_it(project):
    (project / "lib.py").write_text('WEIGHTS = b"other weights"\n')
    assert_stale(lock_check(project), ["stale: lib.py (modified); reruns make, use"])


def test_a_deleted_code_dep_is_stale(project):
    (project / "use.py").unlink()
    assert_stale(lock_check(project), ["stale: use.py (deleted); reruns use"])


def test_a_declared_param_names_the_key_and_stage(project):
    edit(project / "params.yaml", "lr: 0.1", "lr: 0.2")
    assert_stale(lock_check(project), ["stale: params.yaml: make.lr (modified); reruns make"])


def test_a_param_no_stage_declares_is_not_stale(project):
    edit(project / "params.yaml", "unused: 1", "unused: 2")
    assert_current(lock_check(project))


def test_a_param_of_a_whole_section_names_the_section(project):
    edit(project / "params.yaml", "name: full", "name: fast")
    assert_stale(lock_check(project), ["stale: params.yaml: use (modified); reruns use"])


def test_a_removed_param_is_stale(project):
    edit(project / "params.yaml", "  seed: 0\n", "")
    assert_stale(lock_check(project), ["stale: params.yaml: make.seed (deleted); reruns make"])


def test_a_changed_command_names_the_stage(project):
    edit(project / "dvc.yaml", "cmd: python use.py", "cmd: python use.py --verbose")
    assert_stale(lock_check(project), ["stale: changed command of stage use; reruns use"])


def test_a_stage_missing_from_dvc_lock_is_named(project):
    (project / "dvc.yaml").write_text(PIPELINE + (
        "  publish:\n"
        "    cmd: cp summary.txt published.txt\n"
        "    deps: [summary.txt]\n"
        "    outs: [published.txt]\n"
    ))
    assert_stale(lock_check(project), ["stale: stage publish is not in dvc.lock"])


def test_an_out_dvc_yaml_gained_or_lost_without_dvc_lock_is_named(project):
    """dvc.yaml declares another out, dvc.lock untouched: `dvc status` calls it a changed out, which the check
    otherwise leaves to the data."""
    edit(project / "dvc.yaml", "outs: [summary.txt]", "outs: [extra.txt]")
    assert_stale(lock_check(project), [
        "stale: extra.txt is an out of stage use in dvc.yaml but not in dvc.lock",
        "stale: summary.txt is an out of stage use in dvc.lock but not in dvc.yaml",
    ])


def test_several_changes_give_one_line_each(project):
    (project / "lib.py").write_text('WEIGHTS = b"other weights"\n')
    edit(project / "params.yaml", "lr: 0.1", "lr: 0.3")
    edit(project / "dvc.yaml", "cmd: python make.py", "cmd: python make.py --fast")
    assert_stale(lock_check(project), [
        "stale: changed command of stage make; reruns make",
        "stale: lib.py (modified); reruns make, use",
        "stale: params.yaml: make.lr (modified); reruns make",
    ])


def test_committing_the_change_without_dvc_repro_is_still_stale(project):
    (project / "use.py").write_text(USE + "# committed, dvc.lock not refreshed\n")
    run(["git", "commit", "-qam", "edit use.py"], project, clean_env())
    assert_stale(lock_check(project), ["stale: use.py (modified); reruns use"])


# --- cannot run ---------------------------------------------------------------------------------

def test_no_dvc_lock_is_an_error(project):
    (project / "dvc.lock").unlink()
    result = lock_check(project)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"lock-check: error: {project} has no dvc.lock" in result.stderr
    assert result.stdout == ""


def test_a_directory_without_dvc_yaml_is_an_error(tmp_path):
    result = lock_check(tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"lock-check: error: {tmp_path} has no dvc.yaml" in result.stderr
    assert result.stdout == ""


def test_pipeline_files_outside_a_dvc_repository_are_an_error(origin, tmp_path):
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", "make.py", "use.py", "lib.py"):
        (tmp_path / name).write_text((origin / name).read_text())  # no .dvc/: not a DVC project
    result = lock_check(tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "lock-check: error: `dvc status` failed" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("name, text, reason", [
    ("dvc.lock", "schema: '2.0'\nstages:\n<<<<<<< HEAD\n  a: {}\n=======\n  b: {}\n>>>>>>> theirs\n",
     " cannot be read as YAML: while scanning a simple key"),
    ("dvc.lock", "- a\n- b\n", " holds no mapping of stages"),
    ("dvc.yaml", "stages: [a, b]\n", " holds no mapping of stages"),
    # hand-edited entries of a stage (DVC writes each dep and out as a mapping with its path)
    ("dvc.lock", "stages:\n  a:\n    cmd: a\n    outs: x\n",
     ": the outs of stage a are not a list of entries each with a path"),
    ("dvc.lock", "stages:\n  a:\n    cmd: a\n    outs:\n    - md5: 0\n",
     ": the outs of stage a are not a list of entries each with a path"),
    ("dvc.lock", "stages:\n  a:\n    cmd: a\n    deps:\n    - path: [1]\n",
     ": the deps of stage a are not a list of entries each with a path"),
])
def test_a_lock_or_pipeline_file_that_is_no_mapping_of_stages_is_an_error_naming_it(tmp_path, name, text, reason):
    """A merge that left its conflict markers in dvc.lock is one line and exit 2, not a traceback and exit 1
    (the code of a stale lock)."""
    (tmp_path / "dvc.yaml").write_text("stages:\n  a:\n    cmd: a\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  a:\n    cmd: a\n")
    (tmp_path / name).write_text(text)
    result = lock_check(tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"lock-check: error: {tmp_path / name}{reason}"]
    assert result.stdout == ""


def test_a_missing_project_directory_is_a_usage_error(tmp_path):
    result = lock_check(tmp_path / "nowhere")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


# --- the pure parts ----------------------------------------------------------------------------

def test_stage_outs_lists_outs_metrics_and_plots(tmp_path):
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          a:
            cmd: a
            outs: [models/a.pt, {data/cached: {cache: false}}]
            metrics: [{metrics.json: {cache: false}}]
            plots: [{reports/curve.csv: {x: epoch}}]
          b:
            cmd: b
            deps: [models/a.pt]
    """))
    assert stage_outs(read_stages(tmp_path / "dvc.yaml")) == {"models/a.pt", "data/cached", "metrics.json",
                                                             "reports/curve.csv"}


def test_stale_entries_keeps_code_params_and_commands_only():
    status = {
        "make": [{"changed deps": {"make.py": "modified", "params.yaml": {"make.lr": "modified"}}},
                 {"changed outs": {"models/x.pt": "not in cache"}}],
        "use": [{"changed deps": {"models/x.pt": "deleted", "lib.py": "modified"}},
                {"changed outs": {"summary.txt": "not in cache"}}, "changed command"],
        "other": [{"changed deps": {"lib.py": "modified"}}],
    }
    assert stale_entries(status, {"models/x.pt", "summary.txt"}) == {
        "make.py (modified)": ["make"],
        "params.yaml: make.lr (modified)": ["make"],
        "lib.py (modified)": ["use", "other"],
        "changed command of stage use": ["use"],
    }
    assert stale_entries({}, set()) == {}


# --- this project --------------------------------------------------------------------------------

TRAINING = "src/softmax_regression/training/loop.py"


def test_this_projects_committed_dvc_lock_is_current_and_a_code_change_makes_it_stale(tmp_path):
    clone = clone_project(tmp_path / "project")  # the committed HEAD, as CI checks it out

    result = lock_check(clone)
    assert result.returncode == 0, f"the committed dvc.lock of HEAD is not current:\n{result.stdout}{result.stderr}"
    assert result.stdout.splitlines() == [CURRENT]

    spec = yaml.safe_load((clone / "dvc.yaml").read_text())
    users = sorted(name for name, stage in spec["stages"].items() if TRAINING in (stage.get("deps") or []))
    assert {"train_scratch", "train_concise"} <= set(users)
    with open(clone / TRAINING, "a") as handle:
        handle.write("# a comment: still a change of a code dep\n")
    assert_stale(lock_check(clone), [f"stale: {TRAINING} (modified); reruns {', '.join(users)}"])
