"""`python -m pipeline.ci.reproduce_check`: the dvc.lock comparison, and the command end to end on tiny DVC projects.

The real pipeline's pass case is what `make test` runs after pytest; here the
command runs, with real git and DVC, on small projects (a stage that writes
the same bytes every time, or fresh random ones, and one that reads them)
whose dvc.lock is committed, exactly as a CI job would run it on a clone.
The command is a process of its own (it reads TMPDIR and the DVC and MLflow
variables of its environment); DVC's own API sets up the small projects in
this interpreter: each `dvc` process would spend a third of a second importing DVC.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.ci.reproduce_check import lock_drift, lock_entries  # noqa: E402  (support puts the project on sys.path)
from support import PROJECT_ROOT, clean_env, dvc_repo, run

SUCCESS = "reproduce-check: a clean clone rebuilds the committed dvc.lock exactly; git status is clean"

# --- lock_entries / lock_drift on hand-written dvc.lock texts -----------------------------------

COMMITTED = textwrap.dedent("""\
    schema: '2.0'
    stages:
      make:
        cmd: python make.py fixed
        deps:
        - path: make.py
          hash: md5
          md5: 11111111111111111111111111111111
          size: 120
        params:
          params.yaml:
            make.lr: 0.1
            make.layers: [16, 8]
        outs:
        - path: metrics.json
          hash: md5
          md5: 22222222222222222222222222222222
          size: 17
        - path: models/x.pt
          hash: md5
          md5: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
          size: 13
      use:
        cmd: python use.py
        deps:
        - path: models/x.pt
          hash: md5
          md5: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
          size: 13
        - path: use.py
          hash: md5
          md5: 33333333333333333333333333333333
          size: 80
        params:
          params.yaml:
            use:
              k: 1
              name: full
        outs:
        - path: reports
          hash: md5
          md5: 44444444444444444444444444444444.dir
          size: 2
          nfiles: 1
""")


def edited(**replacements: str) -> str:
    """COMMITTED with each ``label=(old, new)``: ``old``, which occurs exactly once, replaced by ``new``."""
    text = COMMITTED
    for old, new in replacements.values():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def test_lock_entries_lists_every_command_hash_and_param():
    entries = lock_entries(COMMITTED)
    assert entries == {
        ("make", "cmd", ""): "python make.py fixed",
        ("make", "dep", "make.py"): "1" * 32,
        ("make", "param", "params.yaml:make.lr"): "0.1",
        ("make", "param", "params.yaml:make.layers"): "[16, 8]",
        ("make", "out", "metrics.json"): "2" * 32,
        ("make", "out", "models/x.pt"): "a" * 32,
        ("use", "cmd", ""): "python use.py",
        ("use", "dep", "models/x.pt"): "a" * 32,
        ("use", "dep", "use.py"): "3" * 32,
        ("use", "param", "params.yaml:use"): '{"k": 1, "name": "full"}',
        ("use", "out", "reports"): "4" * 32 + ".dir",
    }
    assert lock_entries("") == {}


def test_identical_locks_have_no_drift_even_reformatted():
    assert lock_drift(COMMITTED, COMMITTED) == []
    # The same entries in another order and layout: compared entry by entry, not byte by byte.
    lock = yaml.safe_load(COMMITTED)
    lock["stages"] = dict(reversed(list(lock["stages"].items())))
    lock["stages"]["make"]["outs"].reverse()
    reordered = yaml.safe_dump(lock, sort_keys=True, default_flow_style=True)
    assert reordered != COMMITTED
    assert lock_drift(COMMITTED, reordered) == []


def test_a_changed_out_hash_is_one_line_naming_path_and_stage():
    # metrics.json is no stage's dep: exactly one entry differs.
    rebuilt = edited(out=("  md5: 22222222222222222222222222222222", "  md5: 55555555555555555555555555555555"))
    assert lock_drift(COMMITTED, rebuilt) == [
        "drift: metrics.json (out of make): committed 2222222222222222, rebuilt 5555555555555555"
    ]


def test_a_changed_model_is_drift_of_its_out_and_of_every_dep_on_it():
    rebuilt = COMMITTED.replace("a" * 32, "b" * 32)
    lines = lock_drift(COMMITTED, rebuilt)
    assert lines == [
        f"drift: models/x.pt (out of make): committed {'a' * 16}, rebuilt {'b' * 16}",
        f"drift: models/x.pt (dep of use): committed {'a' * 16}, rebuilt {'b' * 16}",
    ]


def test_an_entry_on_one_side_only_says_which_side():
    extra_out = "    - path: models/extra.pt\n      hash: md5\n      md5: " + "e" * 32 + "\n      size: 3\n"
    rebuilt = edited(extra=("\n  use:\n", "\n" + extra_out + "  use:\n"))
    assert lock_drift(COMMITTED, rebuilt) == [
        "drift: models/extra.pt (out of make): not in the committed dvc.lock"
    ]
    assert lock_drift(rebuilt, COMMITTED) == [
        "drift: models/extra.pt (out of make): not written by the rebuild"
    ]


def test_a_stage_missing_from_one_side_lists_each_of_its_entries():
    # Ordered by stage, then command, deps, outs, params.
    lock = yaml.safe_load(COMMITTED)
    del lock["stages"]["use"]
    lines = lock_drift(COMMITTED, yaml.safe_dump(lock))
    assert lines == [
        "drift: command of use: not written by the rebuild",
        "drift: models/x.pt (dep of use): not written by the rebuild",
        "drift: use.py (dep of use): not written by the rebuild",
        "drift: reports (out of use): not written by the rebuild",
        "drift: params.yaml:use (param of use): not written by the rebuild",
    ]


def test_a_changed_param_names_the_params_file_key_and_stage():
    rebuilt = edited(lr=("make.lr: 0.1", "make.lr: 0.2"))
    assert lock_drift(COMMITTED, rebuilt) == [
        "drift: params.yaml:make.lr (param of make): committed 0.1, rebuilt 0.2"
    ]
    rebuilt = edited(section=("name: full", "name: fast"))
    [line] = lock_drift(COMMITTED, rebuilt)
    assert line.startswith("drift: params.yaml:use (param of use): committed ")


def test_a_changed_command_names_the_stage():
    rebuilt = edited(cmd=("cmd: python make.py fixed", "cmd: python make.py random"))
    [line] = lock_drift(COMMITTED, rebuilt)
    assert line.startswith("drift: command of make: committed python make.py")
    assert ", rebuilt python make.py" in line


def test_several_differences_give_one_line_each_by_stage_then_kind():
    rebuilt = edited(
        lr=("make.lr: 0.1", "make.lr: 0.3"),
        use=("  md5: 33333333333333333333333333333333", "  md5: 66666666666666666666666666666666"),
        reports=("44444444444444444444444444444444.dir", "77777777777777777777777777777777.dir"),
    )
    assert lock_drift(COMMITTED, rebuilt) == [
        "drift: params.yaml:make.lr (param of make): committed 0.1, rebuilt 0.3",
        "drift: use.py (dep of use): committed 3333333333333333, rebuilt 6666666666666666",
        "drift: reports (out of use): committed 4444444444444444, rebuilt 7777777777777777",
    ]


def test_help_describes_the_check():
    result = run([sys.executable, "-m", "pipeline.ci.reproduce_check", "--help"], PROJECT_ROOT)
    assert "dvc.lock" in result.stdout
    assert "--keep" in result.stdout and "--project" in result.stdout


# --- end to end on tiny DVC projects -------------------------------------------------------------

ENV_KEYS = ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "PYTHONPATH")

MAKE = f"""\
import json, os, pathlib, sys
pathlib.Path("models").mkdir(exist_ok=True)
pathlib.Path("models/x.pt").write_bytes(os.urandom(16) if sys.argv[1] == "random" else b"fixed weights")
pathlib.Path("metrics.json").write_text(json.dumps({{"accuracy": 0.5}}))
# What the stage saw, in a git-ignored file (not an out: it differs between runs).
pathlib.Path("env.json").write_text(json.dumps({{k: os.environ.get(k) for k in {ENV_KEYS!r}}}))
uri = os.environ.get("MLFLOW_TRACKING_URI", "")
if uri.startswith("sqlite:///"):  # what MLflow would do: create the SQLite store it is pointed at
    pathlib.Path(uri[len("sqlite:///"):]).write_text("runs")
"""

USE = """\
import pathlib
pathlib.Path("summary.txt").write_text(str(len(pathlib.Path("models/x.pt").read_bytes())))
"""


def pipeline_yaml(mode: str) -> str:
    return textwrap.dedent(f"""\
        stages:
          make:
            cmd: python make.py {mode}
            deps: [make.py]
            outs: [models/x.pt]
            metrics:
              - metrics.json:
                  cache: false
          use:
            cmd: python use.py
            deps: [use.py, models/x.pt]
            outs: [summary.txt]
    """)


def git(project: Path, *args: str) -> str:
    return run(["git", *args], project, clean_env()).stdout


def tiny_project(path: Path, files: dict[str, str], *, repro: bool = True, delete: tuple[str, ...] = ()) -> Path:
    """A git + DVC project at ``path`` holding ``files``, on which `dvc repro` ran (``delete``: files then
    removed), committed with its dvc.lock; then every git-ignored file (outs, DVC cache) is removed, as in
    a fresh clone."""
    path.mkdir(parents=True)
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    env = clean_env()
    run(["git", "init", "-q"], path, env)
    with dvc_repo(path, init=True) as repo:
        if repro:
            repo.reproduce()
    for rel in delete:
        (path / rel).unlink()
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "tiny project"], path, env)
    run(["git", "clean", "-fdXq"], path, env)
    return path


def clone(origin: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent, clean_env())
    return dest


@pytest.fixture(scope="module")
def steady(tmp_path_factory) -> Path:
    """Committed tiny project whose stages write the same bytes on every run."""
    root = tmp_path_factory.mktemp("steady")
    return tiny_project(root / "origin", {"make.py": MAKE, "use.py": USE, "dvc.yaml": pipeline_yaml("fixed"),
                                          ".gitignore": "env.json\n"})


@pytest.fixture
def tmpdir_env(tmp_path):
    """(environment, TMPDIR): the command's temporary directories go under tmp_path, so we can look at them."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return clean_env(TMPDIR=str(tmp)), tmp


def reproduce_check(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pipeline.ci.reproduce_check", *args], PROJECT_ROOT, env=env, check=False,
               timeout=300)


def kept_dir(result: subprocess.CompletedProcess) -> Path:
    match = re.search(r"reproduce-check: kept (\S+)", result.stderr)
    assert match, result.stderr
    return Path(match.group(1))


def workdirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("reproduce-check-*"))


def test_steady_project_passes_in_an_isolated_environment(tmp_path, steady, tmpdir_env):
    project = clone(steady, tmp_path / "project")
    env, tmp = tmpdir_env
    user_store = tmp_path / "user-mlflow.db"
    # As if run from inside someone's `dvc exp run`, with their own MLflow store: none of it may leak in.
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{user_store}", DVC_ROOT=str(tmp_path), DVC_EXP_NAME="outer-exp")
    assert git(project, "status", "--porcelain", "--ignored") == ""

    result = reproduce_check("--project", str(project), "--keep", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [SUCCESS]
    kept = kept_dir(result)
    assert workdirs(tmp) == [kept]
    clone_dir = kept / "project"
    assert git(clone_dir, "rev-parse", "HEAD") == git(project, "rev-parse", "HEAD")
    assert (clone_dir / "dvc.lock").read_text() == (project / "dvc.lock").read_text()
    assert (clone_dir / "models/x.pt").read_bytes() == b"fixed weights"  # the rebuild happened there
    log = (kept / "repro.log").read_text()
    assert "Running stage 'make'" in log and "Running stage 'use'" in log
    seen = json.loads((clone_dir / "env.json").read_text())
    assert seen["MLFLOW_TRACKING_URI"] == f"sqlite:///{kept / 'mlflow.db'}"
    assert seen["DVC_EXP_NAME"] is None
    assert seen["DVC_ROOT"] == str(clone_dir)  # DVC's own value for the clone, not the caller's
    assert seen["PYTHONPATH"].split(os.pathsep)[0] == str(clone_dir / "src")
    assert (kept / "mlflow.db").read_text() == "runs"
    assert not user_store.exists()
    # The project itself got nothing: no outs, no env.json, no DVC cache, no store.
    assert git(project, "status", "--porcelain", "--ignored") == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project", "tmp"]


def test_without_keep_the_temporary_directory_is_removed(tmp_path, steady, tmpdir_env):
    project = clone(steady, tmp_path / "project")
    env, tmp = tmpdir_env
    result = reproduce_check("--project", str(project), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [SUCCESS]
    assert "kept" not in result.stderr
    assert workdirs(tmp) == []


def test_project_option_may_name_any_directory_inside_the_repository(tmp_path, steady, tmpdir_env):
    project = clone(steady, tmp_path / "project")
    assert (project / "models/.gitignore").is_file()  # a committed subdirectory
    env, _ = tmpdir_env
    result = reproduce_check("--project", str(project / "models"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [SUCCESS]


def test_uncommitted_changes_are_not_part_of_the_check(tmp_path, steady, tmpdir_env):
    project = clone(steady, tmp_path / "project")
    (project / "make.py").write_text("raise SystemExit('broken in the working tree only')\n")
    (project / "dvc.lock").write_text((project / "dvc.lock").read_text().replace("python use.py", "python other.py"))
    (project / "untracked.txt").write_text("not committed\n")
    env, _ = tmpdir_env
    result = reproduce_check("--project", str(project), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [SUCCESS]
    assert "broken in the working tree only" not in result.stderr
    assert (project / "make.py").read_text() == "raise SystemExit('broken in the working tree only')\n"


def test_drifting_project_fails_with_one_line_per_differing_entry(tmp_path, tmpdir_env):
    project = tiny_project(tmp_path / "drifting", {"make.py": MAKE, "use.py": USE,
                                                   "dvc.yaml": pipeline_yaml("random"), ".gitignore": "env.json\n"})
    committed = {out["path"]: out["md5"] for out in yaml.safe_load((project / "dvc.lock").read_text())
                 ["stages"]["make"]["outs"]}
    env, _ = tmpdir_env
    result = reproduce_check("--project", str(project), "--keep", env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    rebuilt = hashlib.md5((kept_dir(result) / "project/models/x.pt").read_bytes()).hexdigest()
    before, after = committed["models/x.pt"][:12], rebuilt[:12]
    assert before != after
    lines = result.stdout.splitlines()
    # metrics.json and summary.txt are the same bytes; the model is not listed again as a dep of `use`,
    # nor dvc.lock as "dirty"
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"drift: models/x.pt (out of make): committed {before}")
    assert f", rebuilt {after}" in lines[0]
    assert "; models/x.pt: the committed version is not in the DVC cache to compare with (`dvc pull` it" in lines[0]
    assert ("reproduce-check: a clean clone's rebuild differs from the committed dvc.lock "
            "(1 line(s); outs: 2 identical, 0 within tolerance, 1 drift)") in result.stderr


def test_a_committed_lock_that_differs_from_the_rebuilds_in_form_only_is_dirty(tmp_path, steady, tmpdir_env):
    """Every entry the same, but not the bytes DVC writes (another DVC version's lock, a hand edit): the rebuild
    leaves `git status` unclean, so it is no exact reproduction."""
    project = clone(steady, tmp_path / "project")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for entry in stage.get("deps", []) + stage.get("outs", []):
            entry.pop("size", None)  # DVC writes it; an older lock may lack it
    (project / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=True))
    git(project, "commit", "-qam", "dvc.lock without sizes")
    env, _ = tmpdir_env
    result = reproduce_check("--project", str(project), env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["dirty: `git status` after the rebuild: M dvc.lock"]



@pytest.mark.parametrize("text, reason", [
    ("schema: '2.0'\nstages:\n<<<<<<< HEAD\n  a: {}\n=======\n  b: {}\n>>>>>>> theirs\n",
     " cannot be read as YAML: while scanning a simple key"),
    ("- a\n- b\n", " holds no mapping of stages"),
    ("stages:\n  make:\n    cmd: python make.py fixed\n    outs: models/x.pt\n",
     ": the outs of stage make are not a list of entries each with a path"),
], ids=["conflict markers", "a list", "an out that is no entry"])
@pytest.mark.parametrize("mode", ["rebuild", "rebuilt"])
def test_a_committed_lock_that_is_no_mapping_of_stages_is_an_error_naming_it(tmp_path, steady, tmpdir_env, text,
                                                                           reason, mode):
    """A merge that left its conflict markers in the committed dvc.lock is one line and exit 2 (the check could
    not run), before any rebuild: not a YAML traceback, nor DVC's own failure."""
    project = clone(steady, tmp_path / "project")
    (project / "dvc.lock").write_text(text)
    git(project, "commit", "-qam", "a broken dvc.lock")
    env, tmp = tmpdir_env
    result = reproduce_check("--project", str(project), *(["--rebuilt", str(project)] if mode == "rebuilt" else []),
                             env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"reproduce-check: error: the committed dvc.lock{reason}"]
    assert result.stdout == ""
    assert workdirs(tmp) == []


def test_a_rebuilt_workspace_is_not_judged_exact_against_a_lock_that_lacks_an_out(tmp_path, steady, tmpdir_env):
    """dvc.yaml gained an out, committed without `dvc repro`: the outs dvc.lock records all match, yet the
    committed lock is stale, and a workspace is no proof of it."""
    project = clone(steady, tmp_path / "project")
    with dvc_repo(project) as repo:
        repo.reproduce()
    env, _ = tmpdir_env
    rebuilt = ["--project", str(project), "--rebuilt", str(project), "--exact"]
    assert reproduce_check(*rebuilt, env=env).returncode == 0
    (project / "dvc.yaml").write_text(pipeline_yaml("fixed").replace("outs: [summary.txt]", "outs: [summary.txt, "
                                                                     "extra.txt]"))
    (project / "extra.txt").write_text("written by the stage")
    git(project, "commit", "-qam", "declare extra.txt; dvc.lock not refreshed")
    result = reproduce_check(*rebuilt, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["drift: extra.txt is an out of stage use in dvc.yaml but not in dvc.lock"]
STRAY = """\
import os, pathlib
pathlib.Path("out.txt").write_text("out")
pathlib.Path("stray.txt").write_text("written by the stage, declared nowhere")
pathlib.Path("notes.txt").write_text(os.urandom(4).hex())  # a committed file the stage rewrites
"""


def test_files_a_stage_leaves_behind_are_dirty(tmp_path, tmpdir_env):
    project = tiny_project(tmp_path / "stray", {
        "stray.py": STRAY,
        "dvc.yaml": "stages:\n  stray:\n    cmd: python stray.py\n    deps: [stray.py]\n    outs: [out.txt]\n",
    }, delete=("stray.txt",))
    assert "notes.txt" in git(project, "ls-files") and "stray.txt" not in git(project, "ls-files")
    env, _ = tmpdir_env
    result = reproduce_check("--project", str(project), env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "dirty: `git status` after the rebuild: ?? stray.txt",
        "dirty: `git status` after the rebuild: M notes.txt",
    ]
    assert "(2 line(s); outs: 1 identical, 0 within tolerance, 0 drift)" in result.stderr


def test_failing_stage_is_an_error_not_a_pass(tmp_path, steady, tmpdir_env):
    project = clone(steady, tmp_path / "project")
    (project / "make.py").write_text("raise SystemExit('stage failed on purpose')\n")
    git(project, "commit", "-qam", "break the stage")
    env, tmp = tmpdir_env
    result = reproduce_check("--project", str(project), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "reproduce-check: error: `dvc repro` failed with exit code" in result.stderr
    assert "stage failed on purpose" in result.stderr
    assert result.stdout == ""
    assert workdirs(tmp) == []


def test_a_stage_the_rebuild_did_not_execute_is_an_error(tmp_path, tmpdir_env):
    # A frozen stage whose out is committed to git: `dvc repro` passes without running it.
    project = tmp_path / "frozen"
    tiny_project(project, {
        "a.py": "open('a.txt', 'w').write('a')\n",
        "b.py": "open('b.txt', 'w').write('b')\n",
        "dvc.yaml": textwrap.dedent("""\
            stages:
              a:
                cmd: python a.py
                deps: [a.py]
                outs: [a.txt]
              b:
                cmd: python b.py
                deps: [b.py]
                outs:
                  - b.txt:
                      cache: false
        """),
    })
    with dvc_repo(project) as repo:
        repo.freeze("b")
    git(project, "commit", "-qam", "freeze b")
    env, _ = tmpdir_env
    result = reproduce_check("--project", str(project), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "reproduce-check: error: the rebuild did not execute stage(s) b:\n" in result.stderr
    assert "frozen stage" in result.stderr  # the tail of the log says why
    assert result.stdout == ""


def test_no_committed_dvc_lock_is_an_error_naming_it(tmp_path, tmpdir_env):
    project = tiny_project(tmp_path / "unlocked", {"make.py": MAKE, "use.py": USE, "dvc.yaml": pipeline_yaml("fixed"),
                                                   ".gitignore": "env.json\n"}, repro=False)
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # in the working tree, not committed
    env, tmp = tmpdir_env
    result = reproduce_check("--project", str(project), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"reproduce-check: error: {project} has no committed dvc.lock" in result.stderr
    assert result.stdout == ""
    assert workdirs(tmp) == []


def test_no_committed_dvc_yaml_is_an_error(tmp_path, tmpdir_env):
    project = tmp_path / "plain"
    project.mkdir()
    run(["git", "init", "-q"], project, clean_env())
    (project / "README").write_text("no pipeline here\n")
    git(project, "add", "README")
    git(project, "commit", "-qm", "readme")
    env, _ = tmpdir_env
    result = reproduce_check("--project", str(project), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{project} has no committed dvc.yaml" in result.stderr


def test_outside_a_git_repository_is_an_error(tmp_path, tmpdir_env):
    project = tmp_path / "nogit"
    project.mkdir()
    (project / "dvc.yaml").write_text(pipeline_yaml("fixed"))
    env, tmp = tmpdir_env
    env["GIT_CEILING_DIRECTORIES"] = str(tmp_path)  # whatever encloses the test's directory
    result = reproduce_check("--project", str(project), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"reproduce-check: error: {project} is not inside a git repository" in result.stderr
    assert result.stdout == ""
    assert workdirs(tmp) == []
