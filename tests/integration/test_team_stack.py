"""The team set-up, for real: `deploy/team_stack.py` starts PostgreSQL, an MLflow server on it with proxied
artifacts and accounts (MLflow's basic-auth app), nginx terminating TLS in front of it, and an SSH server
holding a DVC remote, all on 127.0.0.1; the pipeline, a parallel sweep, a teammate's clone, each account's
rights and a server that goes away are run against it."""

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest
import yaml
from PIL import Image
from test_tracking import assert_champion_predicts_classes, assert_pipeline_tracked

from conftest import fast_copy_of_build
from support import (  # noqa: E402
    PROJECT_ROOT,
    VENV_BIN,
    clean_env,
    fast_copy,
    queued_experiment,
    run,
    set_param,
    stages_ran,
    stages_skipped,
    wait_for_queue,
)

sys.path.insert(0, str(PROJECT_ROOT / "deploy"))  # as `python deploy/team_stack.py` and the server have it
import login_limit  # noqa: E402
import team_stack  # noqa: E402

STACK = [sys.executable, str(PROJECT_ROOT / "deploy" / "team_stack.py")]
MAKE = ["make", "-s", "-C", str(PROJECT_ROOT), f"VENV={VENV_BIN.parent}"]
EXPERIMENT = REGISTERED = "fashion-mnist-softmax"
STAGES = ["fetch", "preprocess", "train_scratch", "train_concise", "train_baseline", "evaluate", "report"]


@dataclass
class Stack:
    root: Path
    state: dict
    lines: list[str]
    """What `up` printed: the lines that point a clone at the stack."""
    env: dict
    """A clean environment with HOME where `up` trusted the SSH host key, and what the printed `export` lines
    set: the server's URI, the CA to trust, the pipeline's account and its password."""

    @property
    def uri(self) -> str:
        return self.state["mlflow"]["uri"]

    def client(self) -> mlflow.MlflowClient:
        """A client of this process, as the account the module runs as (``viewer``: see :func:`stack`)."""
        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def password(self, account: str) -> str:
        return (self.root / "auth" / f"{account}.password").read_text().strip()

    def pids(self) -> list[int]:
        postmaster = Path(self.state["postgres"]["dir"]) / "data" / "postmaster.pid"
        return [self.state["mlflow"]["pid"], self.state["nginx"]["pid"], self.state["ssh"]["pid"],
                int(postmaster.read_text().split()[0])]


def exported(lines: list[str], cwd: Path, env: dict) -> dict:
    """What the printed ``export`` lines set, run by bash as a user pastes them."""
    out = run(["bash", "-c", "\n".join(lines) + "\nenv -0"], cwd, env).stdout
    after = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {key: value for key, value in after.items() if key.startswith(("MLFLOW_TRACKING_", "OPTUNA_"))}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack from `make team-stack-up`; this process's own MLflow client talks to it as ``viewer``."""
    base = tmp_path_factory.mktemp("team")
    home = base / "home"  # the stack trusts its SSH host key in ~/.ssh/known_hosts: this HOME's
    home.mkdir()
    env = clean_env(HOME=str(home))
    root = base / "stack"
    output = run([*MAKE, "team-stack-up", f"STACK_DIR={root}"], base, env).stdout
    state = json.loads((root / "stack.json").read_text())
    lines = [line for line in output.splitlines() if not line.startswith("#")]
    client_env = exported([line for line in lines if line.startswith("export ")], base, env)
    stack = Stack(root, state, lines, {**env, **client_env})
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**client_env, "MLFLOW_TRACKING_USERNAME": "viewer",
                           "MLFLOW_TRACKING_PASSWORD": stack.password("viewer")}.items():
            mp.setenv(key, value)
        yield stack
    # --purge: as root PostgreSQL's data lives in /tmp, outside the state folder pytest removes
    run([*STACK, "down", "--purge", "--dir", str(root)], base, env, check=False)


@pytest.fixture(scope="module")
def team_project(stack, tmp_path_factory, system_data_dir):
    """A copy of the project (offline, the chapter's 10 epochs, a 30-iteration baseline) pointed at the stack by
    the printed lines; the whole pipeline ran, as the ``pipeline`` account."""
    project = fast_copy(tmp_path_factory.mktemp("team-project") / "project")
    set_param(project, "train.epochs", 10)
    set_param(project, "baseline.max_iter", 30)  # as test_tracking's server project: good enough to check
    remote_add, remote_keyfile = stack.lines[-2:]
    assert stack.env["MLFLOW_TRACKING_URI"] == stack.uri and stack.env["MLFLOW_TRACKING_USERNAME"] == "pipeline"
    run(remote_add.split(), project, stack.env)
    run(remote_keyfile.split(), project, stack.env)
    run(["git", "commit", "-qam", "the team's remote"], project)
    first = run(["dvc", "repro"], project, stack.env).stdout
    assert stages_ran(first) == STAGES
    assert not (project / "mlflow.db").exists(), "a local store appeared: the tracking URI was ignored"
    run(["git", "add", "dvc.lock"], project)
    run(["git", "commit", "-qm", "pipeline ran on the team stack"], project)
    return project


def test_up_prints_the_lines_and_every_component_listens_on_loopback_only(stack):
    ssh, auth = stack.state["ssh"], stack.root / "auth"
    assert stack.lines == [
        f"export MLFLOW_TRACKING_URI=https://127.0.0.1:{stack.state['nginx']['port']}",
        f"export MLFLOW_TRACKING_SERVER_CERT_PATH={stack.root / 'tls' / 'ca.crt'}",
        "export MLFLOW_TRACKING_USERNAME=pipeline",
        f'export MLFLOW_TRACKING_PASSWORD="$(cat {auth / "pipeline.password"})"',
        f'export OPTUNA_STORAGE="postgresql+psycopg://optuna:$(cat {auth / "optuna.password"})'
        f'@127.0.0.1:{stack.state["postgres"]["port"]}/optuna"',
        f"dvc remote add -d team ssh://{ssh['user']}@127.0.0.1:{ssh['port']}{ssh['remote']}",
        f"dvc remote modify --local team keyfile {ssh['keyfile']}",
    ]
    assert stack.env["MLFLOW_TRACKING_PASSWORD"] == stack.password("pipeline")
    ports = {stack.state[name]["port"] for name in ("postgres", "mlflow", "nginx", "ssh")}
    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
    assert {c.laddr.port for c in listening} == ports
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    postmaster = psutil.Process(stack.pids()[3])
    assert postmaster.username() != "root" and "postgres" in postmaster.name()
    # the SSH server takes the key and nothing else
    sshd_config = (stack.root / "ssh" / "sshd_config").read_text()
    assert "PasswordAuthentication no" in sshd_config and "KbdInteractiveAuthentication no" in sshd_config
    # every secret is a file only its owner reads, in a folder only its owner enters; so is the whole state
    # (runs, artifacts, the remote) and PostgreSQL's socket, whose local connections are trusted
    assert stat.S_IMODE(auth.stat().st_mode) == stat.S_IMODE(stack.root.stat().st_mode) == 0o700
    for name in ("admin.password", "pipeline.password", "viewer.password", "optuna.password", "secret_key",
                 "proxy_secret", "basic_auth.ini"):
        assert stat.S_IMODE((auth / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((stack.root / "tls" / "server.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((stack.root / "nginx" / "nginx.conf").stat().st_mode) == 0o600  # it holds the proxy secret
    socket = Path(stack.state["postgres"]["dir"]) / f".s.PGSQL.{stack.state['postgres']['port']}"
    assert stat.S_ISSOCK(socket.stat().st_mode) and stat.S_IMODE(socket.stat().st_mode) == 0o700


def test_the_study_account_reaches_its_own_database_and_no_other(stack):
    import psycopg

    url = stack.env["OPTUNA_STORAGE"].replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as connection:
        connection.execute("CREATE TABLE probe (x int)")  # it owns its database
        connection.execute("DROP TABLE probe")
    for other in ("mlflow", "mlflow_auth", "postgres"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(url.rsplit("/", 1)[0] + f"/{other}")


def test_the_pipeline_lands_in_postgresql_and_the_proxied_artifact_store(stack, team_project):
    import psycopg

    client = stack.client()
    assert_pipeline_tracked(client, team_project)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    artifacts = Path(stack.state["mlflow"]["artifacts"])
    for r in runs:
        # uploaded through the server (proxied), into its --artifacts-destination
        assert r.info.artifact_uri.startswith("mlflow-artifacts:/"), r.info.artifact_uri
    for kind in ("scratch", "concise", "baseline"):
        assert list(artifacts.rglob(f"checkpoint/{kind}.pt")), f"{kind}'s model file is not in {artifacts}"
    assert list(artifacts.rglob("MLmodel")) and list(artifacts.rglob("training_curves.png"))

    with psycopg.connect(stack.state["postgres"]["uri"]) as db:
        stored = {row[0] for row in db.execute("SELECT run_uuid FROM runs")}
        assert {r.info.run_id for r in runs} <= stored
        (val_acc_rows,) = db.execute("SELECT count(*) FROM metrics WHERE key = 'val_acc'").fetchone()
        assert val_acc_rows >= 2 * 10  # ten epochs of scratch and of concise
        (alias,) = db.execute("SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'champion'",
                              (REGISTERED,)).fetchone()
    assert str(alias) == str(client.get_model_version_by_alias(REGISTERED, "champion").version)
    assert_champion_predicts_classes(stack.uri, team_project)


def test_the_rest_api_lists_runs_metrics_and_the_registered_model(stack, team_project):
    """What another tool reads through MLflow's REST API (as the viewer, through nginx): the pipeline's runs
    with their metrics as evaluate wrote them, and the champion alias."""
    def api(path: str, body: dict | None = None) -> dict:
        headers = {**basic("viewer", stack.password("viewer")), "Content-Type": "application/json"}
        status, answer = request(stack, "/api/2.0/mlflow" + path, headers,
                                 json.dumps(body).encode() if body is not None else None)
        assert status == 200, (path, status, answer[:300])
        return json.loads(answer)

    experiment = api(f"/experiments/get-by-name?experiment_name={EXPERIMENT}")["experiment"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
    found = api("/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})
    runs = {r["info"]["run_name"]: r for r in found["runs"]}
    assert set(runs) == {"data", "scratch", "concise", "baseline"}
    assert {m["key"]: m["value"] for m in runs.pop("data")["data"]["metrics"]} == {
        "train_size": 55000, "val_size": 5000, "test_size": 10000}
    metrics = json.loads((team_project / "reports/eval/metrics.json").read_text())
    for name, run_ in runs.items():
        logged = {m["key"]: m["value"] for m in run_["data"]["metrics"]}
        assert logged["test_accuracy"] == pytest.approx(metrics[name]["test_accuracy"], abs=1e-9)
    version = api(f"/registered-models/alias?name={REGISTERED}&alias=champion")["model_version"]
    assert version["name"] == REGISTERED and version["run_id"] in {r["info"]["run_id"] for r in runs.values()}
    model = api(f"/registered-models/get?name={REGISTERED}")["registered_model"]
    assert any(a["alias"] == "champion" for a in model.get("aliases", []))


# --- who gets in --------------------------------------------------------------------------------------------------

def request(stack: Stack, path: str, headers: dict | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of a request through nginx (a POST where ``body`` is given), the stack's CA trusted."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=stack.state["tls"]["ca"])
    req = urllib.request.Request(stack.uri + path, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def basic(user: str, password: str) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


PROTECTED = ("/api/2.0/mlflow/experiments/search?max_results=1",  # the REST API
             "/ajax-api/2.0/mlflow/experiments/search?max_results=1",  # the UI's API
             "/api/2.0/mlflow-artifacts/artifacts",  # the artifact proxy
             "/")  # the UI


def test_no_credentials_a_wrong_password_or_a_forged_session_are_refused_everywhere(stack):
    import base64
    import hashlib
    import hmac

    # a Flask session cookie signed with a guessed key, and one for a user name only
    forged = base64.urlsafe_b64encode(b'{"_user_id":"admin"}').decode().rstrip("=") + ".Zx9aQw." + \
        base64.urlsafe_b64encode(hmac.new(b"guess", b"x", hashlib.sha1).digest()).decode().rstrip("=")
    refused = {"nothing": {}, "a wrong password": basic("viewer", "not-the-password-at-all"),
               "an unknown user": basic("mallory", stack.password("viewer")),
               "another's password": basic("admin", stack.password("viewer")),
               "a forged session": {"Cookie": f"session={forged}"},
               "an expired session and no password": {"Cookie": "session=.eJyrVkrOzytJzSvJzEvNi09MSalUslJKSU3KTc0r"},
               "a bearer token": {"Authorization": "Bearer " + stack.password("pipeline")}}
    for path in PROTECTED:
        for what, headers in refused.items():
            status, body = request(stack, path, headers)
            assert status == 401, (path, what, status)
            assert b"You are not authenticated" in body or what == "a bearer token"  # nginx's own 401 page
        assert request(stack, path, basic("viewer", stack.password("viewer")))[0] == 200, path
    # an account cannot be made without the admin's password: not anonymously, not by another account
    new = json.dumps({"username": "mallory", "password": "x" * 20}).encode()
    for headers, status in (({}, 401), (basic("pipeline", stack.password("pipeline")), 403)):
        assert request(stack, "/api/2.0/mlflow/users/create", {"Content-Type": "application/json", **headers},
                       new)[0] == status
    assert request(stack, "/health")[0] == 200  # the one public route: the load balancer's probe


def test_plain_http_and_an_untrusted_certificate_do_not_get_through(stack):
    import ssl
    import urllib.error
    import urllib.request

    port = stack.state["nginx"]["port"]
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1",
                               timeout=10)
        raise AssertionError("plain HTTP got through")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and b"plain HTTP request was sent to HTTPS port" in exc.read()
    with pytest.raises(urllib.error.URLError) as untrusted:  # the system's CAs do not know the stack's
        urllib.request.urlopen(stack.uri + "/health", timeout=10, context=ssl.create_default_context())
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
    # the server itself listens where only this machine reaches it, and answers nginx alone: a local client on its
    # port, the right password and a forged client address included, gets 403 (no TLS, no login limit around it)
    internal = stack.state["mlflow"]["internal_uri"]
    assert internal == f"http://127.0.0.1:{stack.state['mlflow']['port']}"
    for path in (*PROTECTED, "/api/2.0/mlflow/users/list"):
        direct = urllib.request.Request(internal + path, headers={**basic("admin", stack.password("admin")),
                                                                  "X-Real-IP": "203.0.113.7"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(direct, timeout=30)
        assert refused.value.code == 403, path
        assert b"this server answers through the team stack's nginx only" in refused.value.read(), path
    with urllib.request.urlopen(internal + "/health", timeout=10) as health:  # nginx's and `up`'s own probe
        assert health.status == 200


def registry_state(client) -> tuple:
    """What the viewer must not be able to change: the runs, the versions and the alias."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    versions = client.search_model_versions(f"name = '{REGISTERED}'")
    return (sorted((r.info.run_id, r.info.status, r.info.lifecycle_stage, len(r.data.metrics)) for r in runs),
            sorted(str(v.version) for v in versions),
            str(client.get_model_version_by_alias(REGISTERED, "champion").version))


def test_the_viewer_reads_everything_and_changes_nothing(stack, team_project, tmp_path):
    """As ``viewer`` (this process's account): every read works, the champion loads and predicts; every write
    is refused with 403, and the server holds afterwards exactly what it held before."""
    from mlflow.exceptions import MlflowException

    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "viewer"
    client = stack.client()
    before = registry_state(client)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.implementation = 'scratch'")
    scratch = runs[0]
    assert client.get_metric_history(scratch.info.run_id, "val_acc")
    downloaded = Path(client.download_artifacts(scratch.info.run_id, "checkpoint/scratch.pt", str(tmp_path)))
    assert downloaded.read_bytes() == (team_project / "models/scratch.pt").read_bytes()
    assert_champion_predicts_classes(stack.uri, team_project)
    champion = client.get_model_version_by_alias(REGISTERED, "champion")

    writes = {
        "create a run": lambda: client.create_run(experiment.experiment_id),
        "log a metric": lambda: client.log_metric(scratch.info.run_id, "val_acc", 1.0),
        "register a version": lambda: client.create_model_version(REGISTERED, champion.source, scratch.info.run_id),
        "move @champion": lambda: client.set_registered_model_alias(REGISTERED, "champion", "1"),
        "delete @champion": lambda: client.delete_registered_model_alias(REGISTERED, "champion"),
        "delete a run": lambda: client.delete_run(scratch.info.run_id),
        "tag a run as the champion": lambda: client.set_tag(scratch.info.run_id, "champion", "true"),
    }
    for what, write in writes.items():
        with pytest.raises(MlflowException) as refused:
            write()
        assert refused.value.error_code == "PERMISSION_DENIED" or "403" in str(refused.value), (what, refused.value)
    assert registry_state(client) == before
    assert str(client.get_model_version_by_alias(REGISTERED, "champion").version) == str(champion.version)


def test_a_stage_with_wrong_credentials_fails_before_training_in_one_line(stack, team_project):
    for env, said in (({**stack.env, "MLFLOW_TRACKING_PASSWORD": "not-the-password-at-all"},
                       f"train_scratch: error: MLflow tracking server {stack.uri} refused the credentials of 'pipeline' "
                       "(HTTP 401); check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
                      ({k: v for k, v in stack.env.items() if k not in ("MLFLOW_TRACKING_USERNAME",
                                                                       "MLFLOW_TRACKING_PASSWORD")},
                       f"train_scratch: error: MLflow tracking server {stack.uri} asks for credentials (HTTP 401); set "
                       "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
                      ({k: v for k, v in stack.env.items() if k != "MLFLOW_TRACKING_SERVER_CERT_PATH"},
                       f"train_scratch: error: MLflow tracking server {stack.uri}: its TLS certificate is not trusted")):
        started = time.monotonic()
        result = run([sys.executable, "-m", "pipeline", "train_scratch", "--no-progress"],
                     team_project, env, check=False)
        elapsed = time.monotonic() - started
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [result.stderr.strip()] and \
            result.stderr.strip().startswith(said), result.stderr
        assert "epoch" not in result.stderr and elapsed < 60  # before any training
    assert run(["git", "status", "--porcelain"], team_project).stdout == ""


def test_push_to_the_ssh_remote_then_a_teammates_clone_pulls_and_logs_into_the_server(stack, team_project,
                                                                                      tmp_path):
    run(["dvc", "push"], team_project, stack.env)
    assert list(Path(stack.state["ssh"]["remote"]).rglob("*")), "nothing arrived in the remote"

    clone = tmp_path / "teammate"
    run(["git", "clone", "-q", str(team_project), str(clone)], tmp_path)
    assert not (clone / ".dvc" / "cache").exists() and not (clone / "models").exists()
    run(stack.lines[-1].split(), clone, stack.env)  # the key stays out of git: config.local
    run(["dvc", "pull"], clone, stack.env)
    output = run(["dvc", "repro"], clone, stack.env).stdout
    assert stages_skipped(output) == STAGES and stages_ran(output) == []

    client = stack.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    set_param(clone, "evaluate.baseline", False)
    output = run(["dvc", "repro"], clone, stack.env).stdout
    assert stages_ran(output) == ["evaluate", "report"]
    # the rerun logged into the server: the test metrics on the scratch model's run, a second time
    after = client.search_runs([experiment.experiment_id], max_results=1000)
    scratch_sha = __import__("hashlib").sha256((clone / "models/scratch.pt").read_bytes()).hexdigest()
    (scratch,) = [r for r in after if r.data.tags.get("model_sha256") == scratch_sha]
    history = client.get_metric_history(scratch.info.run_id, "test_accuracy")
    assert len(history) >= 2, "evaluate's rerun did not log into the server"


def test_a_parallel_sweep_on_the_server_records_every_run_and_ends_with_the_best_champion(stack, team_project):
    """Two experiments of one epoch, run at the same time, both against the server; no file lock guards the
    registry there. The champion must be the version with the best validation accuracy, recomputed here from
    the runs. (The machinery is the point, not the models: an epoch is enough to register and race.)"""
    grid = {(lr, wd): None for lr, wd in ((0.05, 0.0001), (0.2, 0.001))}  # none ran before: both train
    for lr, wd in grid:
        grid[(lr, wd)] = queued_experiment(team_project, [f"train.lr={lr}", f"train.weight_decay={wd}",
                                                          "train.epochs=1"], stack.env)
    try:
        run(["dvc", "queue", "start", "-j", "2"], team_project, stack.env, timeout=1500)
        status = wait_for_queue(team_project, list(grid.values()), stack.env)
    finally:
        run(["dvc", "queue", "stop"], team_project, stack.env, check=False)
    assert sorted(status) == sorted(grid.values()) and set(status.values()) == {"Success"}, status

    client = stack.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    for (lr, _wd), name in grid.items():
        runs = [r for r in client.search_runs([experiment.experiment_id],
                                              filter_string=f"tags.dvc_exp_name = '{name}'")
                if r.info.run_name != "baseline"]  # the baseline's one run is shared: every evaluate tags it
        assert sorted(r.info.run_name for r in runs) == [f"concise · {name}", f"scratch · {name}"]
        assert all(r.info.status == "FINISHED" and "val_accuracy" in r.data.metrics for r in runs)
        assert {float(r.data.params["train.lr"]) for r in runs} == {lr}
    # the recomputation: every registered version's run, its val_accuracy as evaluate logged it on the run
    versions = client.search_model_versions(f"name = '{REGISTERED}'")
    scored = [(client.get_run(v.run_id).data.metrics["val_accuracy"], -int(v.version), v) for v in versions]
    best = max(scored, key=lambda s: s[:2])[2]
    champion = client.get_model_version_by_alias(REGISTERED, "champion")
    assert str(champion.version) == str(best.version), [(s[0], -s[1]) for s in scored]
    tagged = client.search_runs([experiment.experiment_id], filter_string="tags.champion = 'true'")
    assert [r.info.run_id for r in tagged] == [best.run_id]
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], team_project)
    run(["dvc", "checkout", "--force"], team_project, stack.env)


TUNING = "fashion-mnist-softmax-tuning"


def write_search(project: Path, study: str, trials: int, epochs: int) -> None:
    (project / "search.yaml").write_text(yaml.safe_dump({
        "study": study, "experiment": TUNING, "trials": trials, "sampler": "random", "seed": 0, "pruner": "none",
        "heartbeat": 1,  # a trial whose worker stopped is failed and run again after 4 s, not 20
        "fixed": {"train.epochs": epochs},
        "space": {"train.lr": {"low": 0.02, "high": 0.5, "log": True}, "train.batch_size": {"choices": [128, 256]}}}))


def start_workers(projects: list[Path], env: dict, per_project: int) -> list:
    return [psutil.Popen([sys.executable, "-m", "pipeline.tune", "worker", "--search", "search.yaml"], cwd=project,
                         env={**env, "PYTHONPATH": str(project / "src")}, stdout=subprocess.DEVNULL,
                         stderr=(project.parent / f"worker-{index}.err").open("w"))
            for project in projects for index in range(per_project)]


HEARTBEAT_MISSED = "a heartbeat of a running trial did not reach the study database"
"""The warning of a worker that goes on (its text quotes the driver's, which may say "error")."""


def worker_errors(projects: list[Path]) -> list[list[str]]:
    """Each worker's lines that report an error: its own, Optuna's, a traceback."""
    return [[line for line in path.read_text().splitlines()
             if ("error" in line.lower() and HEARTBEAT_MISSED not in line) or "Traceback" in line]
            for project in projects for path in sorted(project.parent.glob("worker-*.err"))]


@pytest.fixture(scope="module")
def second_clone(fast_build, tmp_path_factory):
    """Another copy of the project, as a second machine (its workers point at the stack): its own processed
    splits, those of the session's fast build."""
    return fast_copy_of_build(fast_build, tmp_path_factory.mktemp("second-machine") / "project")[0]


def trial_runs(client, study: str) -> dict[int, list]:
    experiment = client.get_experiment_by_name(TUNING)
    found: dict[int, list] = {}
    for r in client.search_runs([experiment.experiment_id], filter_string=f"tags.`optuna.study` = '{study}'",
                                max_results=1000):
        if "optuna.trial" in r.data.tags:
            found.setdefault(int(r.data.tags["optuna.trial"]), []).append(r)
    return found


def test_four_workers_in_two_clones_share_one_study_in_postgresql_and_lose_no_run_or_metric(
        stack, team_project, second_clone):
    """As two machines would: two clones, two workers each, one study in the stack's PostgreSQL (the `optuna`
    account), every trial logged through nginx over TLS as `pipeline`. The study ends with exactly its trials,
    each with exactly one finished MLflow run holding every epoch's metrics, and Optuna and MLflow agree."""
    import optuna

    projects = [team_project, second_clone]
    for project in projects:
        write_search(project, "team", trials=8, epochs=10)
    workers = start_workers(projects, stack.env, per_project=2)
    codes = [w.wait(timeout=900) for w in workers]
    assert codes == [0, 0, 0, 0], worker_errors(projects)

    study = optuna.load_study(study_name="team", storage=stack.env["OPTUNA_STORAGE"])
    finished = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in finished)
    runs = trial_runs(stack.client(), "team")
    for t in finished:
        assert len(runs[t.number]) == 1, t.number
        (r,) = runs[t.number]
        assert r.info.status == "FINISHED" and r.data.tags["optuna.state"] == "COMPLETE"
        assert r.data.metrics["val_acc"] == t.value
        assert float(r.data.params["train.lr"]) == t.params["train.lr"]
        for key in ("val_acc", "lr", "train_loss", "train_acc"):
            assert [m.step for m in stack.client().get_metric_history(r.info.run_id, key)] == list(range(1, 11))
    assert len({r.data.tags["worker"] for rs in runs.values() for r in rs}) == 4  # every worker ran trials
    # what the server held (the closing note quotes it): log calls per second, their 95th percentile latency
    calls = sorted(s for t in finished for s in t.user_attrs["mlflow_log_seconds"])
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    print(f"\n4 workers: {len(calls)} log calls in {span:.1f} s, {len(calls) / span:.1f}/s; p95 latency "
          f"{calls[int(0.95 * (len(calls) - 1))] * 1000:.0f} ms, median {calls[len(calls) // 2] * 1000:.0f} ms")


def test_postgresql_restarting_in_mid_study_stops_a_worker_in_one_line_at_most_and_a_restarted_one_resumes(
        stack, team_project, second_clone):
    import optuna

    projects = [team_project, second_clone]
    for project in projects:
        for old in project.parent.glob("worker-*.err"):
            old.unlink()
        write_search(project, "restart", trials=4, epochs=15)
    workers = start_workers(projects, stack.env, per_project=1)
    storage = stack.env["OPTUNA_STORAGE"]
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                trials = optuna.load_study(study_name="restart", storage=storage).trials
            except KeyError:  # not created yet
                trials = []
            if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
                break
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers), worker_errors(projects)
            time.sleep(0.5)
        # the restart comes in mid-study: trials left to run and a worker running them
        states = [t.state for t in optuna.load_study(study_name="restart", storage=storage).trials]
        assert states.count(optuna.trial.TrialState.COMPLETE) < 4 and any(w.poll() is None for w in workers), states
        pg = stack.state["postgres"]
        run(team_stack.as_db_user([str(Path(pg["bindir"]) / "pg_ctl"), "-D", str(Path(pg["dir"]) / "data"),
                                   "-l", str(Path(pg["dir"]) / "postgres.log"), "-m", "fast", "-w", "restart"]),
            stack.root, stack.env)  # the log file: the new server must not hold this command's output open
        codes = [w.wait(timeout=600) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for code, errors in zip(codes, worker_errors(projects)):
        assert (code, len(errors)) in ((0, 0), (1, 1)), errors  # went on, or stopped in one line
        assert not [line for line in errors if "Traceback" in line]
    run([sys.executable, "-m", "pipeline.tune", "worker", "--search", "search.yaml"], team_project, stack.env,
        timeout=900)
    study = optuna.load_study(study_name="restart", storage=storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 4
    runs = trial_runs(stack.client(), "restart")
    assert all([r.info.status for r in runs[t.number]] == ["FINISHED"] for t in finished)
    assert not [r for rs in runs.values() for r in rs if r.info.status == "RUNNING"]


def test_the_server_going_away_mid_pipeline_fails_fast_in_one_line_and_repro_completes_once_it_is_back(
        stack, team_project):
    set_param(team_project, "train.lr", 0.07)
    client = stack.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    known = {r.info.run_id for r in client.search_runs([experiment.experiment_id], max_results=1000)}
    repro = psutil.Popen(["dvc", "repro"], cwd=team_project, env=stack.env, stdout=open(os.devnull, "w"),
                         stderr=(team_project.parent / "repro.err").open("w"))
    try:
        # once the first model of this repro is in the server, the server goes away
        deadline = time.monotonic() + 300
        while not [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
                   if r.info.run_id not in known and r.info.status == "FINISHED"]:
            assert repro.poll() is None and time.monotonic() < deadline, "the repro ended before the test acted"
            time.sleep(0.2)
        os.killpg(stack.state["mlflow"]["pid"], signal.SIGKILL)
        gone = time.monotonic()
        code = repro.wait(timeout=120)
        waited = time.monotonic() - gone
    finally:
        if repro.poll() is None:
            repro.kill()
    error = [line for line in (team_project.parent / "repro.err").read_text().splitlines() if ": error:" in line]
    assert code != 0 and waited < 30, waited
    assert len(error) == 1 and stack.uri in error[0], error
    # no DVC out is half-written: each is absent or whole, and no temporary is left
    assert not list(team_project.rglob(".*.tmp"))
    for out in ("models/scratch.pt", "models/concise.pt"):
        if (team_project / out).exists():
            from softmax_regression.models.file import load_model
            load_model(team_project / out)

    restarted = run([*STACK, "restart-mlflow", "--dir", str(stack.root)], stack.root.parent, stack.env).stdout
    stack.state = json.loads((stack.root / "stack.json").read_text())
    assert stack.uri in restarted
    output = run(["dvc", "repro"], team_project, stack.env).stdout
    assert "evaluate" in stages_ran(output)
    assert run(["dvc", "status", "--json"], team_project, stack.env).stdout.strip() == "{}"
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], team_project)
    run(["dvc", "checkout", "--force"], team_project, stack.env)


def test_an_emptied_artifact_store_is_found_and_the_champion_registered_again(stack, team_project):
    """The server's proxied artifact folder loses every object while PostgreSQL keeps the records: loading the
    champion names the version and its lost files, and `dvc repro -f` of evaluate and report logs the runs again
    from the model files, registers the champion again and serves it."""
    client = stack.client()
    before = client.get_model_version_by_alias(REGISTERED, "champion")
    artifacts = Path(stack.state["mlflow"]["artifacts"])
    for child in artifacts.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()

    image = team_project.parent / "item.png"
    Image.fromarray(np.load(team_project / "data/processed/test_images.npy")[0].reshape(28, 28)).save(image)
    predict = [str(VENV_BIN / "fmnist-predict"), f"models:/{REGISTERED}@champion", str(image)]
    lost = run(predict, team_project, stack.env, check=False)
    assert lost.returncode == 1 and "Traceback" not in lost.stderr
    (line,) = lost.stderr.strip().splitlines()
    assert (f"version {before.version} of {REGISTERED} lost its files (MLmodel, python_model.pkl, artifacts/model.pt "
            "missing from mlflow-artifacts:/") in line and "run the project's evaluate stage again (forced" in line, line

    result = run(["dvc", "repro", "-f", "-s", "evaluate", "report"], team_project, stack.env)
    said = result.stdout + result.stderr
    for kind in ("scratch", "concise", "baseline"):
        assert re.search(rf"evaluate: run \w+ of the {kind} model lost its files \(checkpoint/{kind}\.pt, ", said), said
    after = client.get_model_version_by_alias(REGISTERED, "champion")
    assert int(after.version) > int(before.version)
    assert (f"{REGISTERED} version {before.version} lost its files (MLmodel, python_model.pkl, artifacts/model.pt "
            f"missing from mlflow-artifacts:/") in said
    assert f"registered its model file again as version {after.version} and moved @champion" in said, said
    assert after.tags["model_sha256"] == before.tags["model_sha256"]
    assert client.get_model_version(REGISTERED, before.version).tags["files_missing"]
    assert list(artifacts.rglob("MLmodel")) and list(artifacts.rglob("report.html"))
    assert_champion_predicts_classes(stack.uri, team_project)
    assert run(predict, team_project, stack.env).stdout.startswith(f"{image}: ")
    assert run(["dvc", "status", "--json"], team_project, stack.env).stdout.strip() == "{}"


def secrets_of(stack: Stack) -> dict[str, str]:
    found = {account: stack.password(account) for account in ("admin", "pipeline", "viewer")}
    found["secret key"] = (stack.root / "auth" / "secret_key").read_text().strip()
    found["proxy secret"] = (stack.root / "auth" / "proxy_secret").read_text().strip()
    found["database password"] = re.search(r"mlflow:([^@]+)@", stack.state["postgres"]["uri"]).group(1)
    found["study database password"] = stack.password("optuna")
    return found


def test_no_secret_is_on_a_command_line_in_the_repository_or_in_a_log(stack, team_project):
    secrets = secrets_of(stack)
    for process in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        for what, secret in secrets.items():
            assert secret not in line, f"the {what} is on the command line of process {process.info['pid']}"
    tracked = run(["git", "ls-files", "-co", "--exclude-standard"], team_project).stdout.split()
    files = [team_project / name for name in tracked] + [team_project / ".dvc" / "config.local"]
    logs = [*stack.root.rglob("*.log"), *Path(stack.state["postgres"]["dir"]).rglob("*.log")]
    assert logs, "the stack wrote no log"
    for path in [*files, *logs]:
        if path.is_file():
            text = path.read_bytes()
            for what, secret in secrets.items():
                assert secret.encode() not in text, f"the {what} is in {path}"


def forget_failed_logins(stack: Stack) -> None:
    with contextlib.closing(sqlite3.connect(stack.root / "auth" / login_limit.DATABASE)) as db:
        db.execute("DELETE FROM failures")
        db.commit()


def test_a_loop_of_wrong_passwords_is_refused_after_the_limit_and_the_pipelines_traffic_never_was(
        stack, team_project):
    """Placed after every test that sends the pipeline's traffic through nginx (a whole `dvc repro`, queued
    sweeps, four tuning workers): none of it was refused as too many. Then a bounded loop of wrong passwords
    from one client: 401 up to the limit, 429 after it, the right password too, for that account only."""
    statuses = [line.split('"')[2].split()[0] for line in (stack.root / "nginx" / "access.log").read_text().splitlines()]
    assert len(statuses) > 300 and "429" not in statuses  # a whole `dvc repro` alone makes about 500
    path = PROTECTED[0]
    forget_failed_logins(stack)  # the earlier tests' own wrong passwords (a stage with wrong credentials)
    answers = [request(stack, path, basic("pipeline", f"guess-{i}")) for i in range(login_limit.LIMIT + 5)]
    assert [status for status, _ in answers] == [401] * login_limit.LIMIT + [429] * 5
    assert b"too many failed logins for 'pipeline' from 127.0.0.1: retry in" in answers[-1][1]
    assert request(stack, path, basic("pipeline", stack.password("pipeline")))[0] == 429  # locked out, right or wrong
    assert request(stack, path, basic("viewer", stack.password("viewer")))[0] == 200  # another account is not
    forget_failed_logins(stack)  # as the window's end would
    assert request(stack, path, basic("pipeline", stack.password("pipeline")))[0] == 200
    # and no account lists the others' names through nginx
    for listing in ("/api/2.0/mlflow/users/list", "/ajax-api/2.0/mlflow/users/list"):
        assert request(stack, listing, basic("admin", stack.password("admin")))[0] == 403


def test_down_stops_everything(stack):
    pids = stack.pids()
    run([*MAKE, "team-stack-down", f"STACK_DIR={stack.root}"], stack.root.parent, stack.env)
    time.sleep(0.5)
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    ports = {stack.state[name]["port"] for name in ("postgres", "mlflow", "nginx", "ssh")}
    assert not [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
    home_known_hosts = Path(stack.env["HOME"]) / ".ssh" / "known_hosts"
    assert "softmax-regression-team-stack" not in home_known_hosts.read_text()
    # the runs stay until `up` or `--purge` (PostgreSQL's data too, which lives in /tmp as root); `env` no longer
    # prints lines that point at nothing
    assert (Path(stack.state["postgres"]["dir"]) / "data" / "PG_VERSION").is_file()
    assert (stack.root / "artifacts").is_dir() and (stack.root / "dvc-remote").is_dir()
    for command in ("env", "restart-mlflow"):
        result = run([*STACK, command, "--dir", str(stack.root)], stack.root.parent, stack.env, check=False)
        assert (result.returncode, result.stdout, result.stderr.splitlines()) == (1, "", [
            f"team-stack: error: the team stack in {stack.root} is stopped (`make team-stack-up` starts a new one)"])


# --- the files the stack writes, at unit level: no PostgreSQL, MLflow or SSH server -------------------------

OTHER_HOSTS = (b"# a comment the user wrote\n"
               b"github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
               b"\n"
               b"|1|hashedhost= ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n")
STACK_LINE = "[127.0.0.1]:40022 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIStackKey softmax-regression-team-stack"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME of the test's own, its ~/.ssh/known_hosts holding the stack's line among the user's (mode 0640)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    known_hosts = home / ".ssh" / "known_hosts"
    known_hosts.write_bytes(OTHER_HOSTS)
    team_stack.trust_host_key(STACK_LINE)
    known_hosts.chmod(0o640)
    assert team_stack.known_hosts_file() == known_hosts
    return home


def test_down_takes_the_stacks_host_key_out_of_known_hosts_and_keeps_every_other_byte_and_the_mode(home):
    known_hosts = home / ".ssh" / "known_hosts"
    assert known_hosts.read_bytes() == OTHER_HOSTS + STACK_LINE.encode() + b"\n"
    team_stack.distrust_host_key(STACK_LINE)
    assert known_hosts.read_bytes() == OTHER_HOSTS
    assert known_hosts.stat().st_mode & 0o7777 == 0o640
    assert sorted(p.name for p in (home / ".ssh").iterdir()) == ["known_hosts"], "a temporary was left"


def test_known_hosts_behind_a_symlink_is_rewritten_where_it_lives_and_the_link_stays(home):
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "known_hosts"
    (home / ".ssh" / "known_hosts").rename(real)
    (home / ".ssh" / "known_hosts").symlink_to(real)
    team_stack.distrust_host_key(STACK_LINE)
    assert (home / ".ssh" / "known_hosts").is_symlink()
    assert real.read_bytes() == OTHER_HOSTS and real.stat().st_mode & 0o7777 == 0o640
    assert sorted(p.name for p in dotfiles.iterdir()) == ["known_hosts"]


def test_trusting_the_host_key_does_not_run_it_into_a_last_line_without_its_newline(home):
    known_hosts = home / ".ssh" / "known_hosts"
    known_hosts.write_bytes(OTHER_HOSTS.rstrip(b"\n"))
    team_stack.trust_host_key(STACK_LINE)
    assert known_hosts.read_bytes() == OTHER_HOSTS + STACK_LINE.encode() + b"\n"
    team_stack.distrust_host_key(STACK_LINE)
    assert known_hosts.read_bytes() == OTHER_HOSTS


@pytest.mark.parametrize("fails", ["fsync", "replace"])
@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["ctrl-c", "disk-full"])
def test_a_rewrite_of_known_hosts_cut_short_leaves_it_byte_for_byte_as_it_was(home, monkeypatch, fails, error):
    """Interrupted once the new content is written (at os.fsync) or at the rename (os.replace): the old file
    stands whole."""
    known_hosts = home / ".ssh" / "known_hosts"
    before = known_hosts.read_bytes()

    def fail(*args):
        raise error

    with monkeypatch.context() as patch:
        patch.setattr(team_stack.os, fails, fail)
        with pytest.raises(type(error)):
            team_stack.distrust_host_key(STACK_LINE)
    assert known_hosts.read_bytes() == before
    assert known_hosts.stat().st_mode & 0o7777 == 0o640
    assert sorted(p.name for p in (home / ".ssh").iterdir()) == ["known_hosts"], "a temporary was left"


def test_a_rewrite_of_known_hosts_that_fails_halfway_through_writing_leaves_it_as_it_was(home):
    """A real short write: a file-size limit of 16 bytes makes the kernel refuse the rest (EFBIG), as a full
    disk would. Writing in place, known_hosts would be cut to 16 bytes."""
    import resource

    known_hosts = home / ".ssh" / "known_hosts"
    before = known_hosts.read_bytes()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, limits[1]))
        with pytest.raises(OSError) as failure:
            team_stack.distrust_host_key(STACK_LINE)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert failure.value.errno == errno.EFBIG
    assert known_hosts.read_bytes() == before
    assert sorted(p.name for p in (home / ".ssh").iterdir()) == ["known_hosts"], "a temporary was left"


@pytest.fixture
def umask_0():
    """No umask: a file created with the default mode would be readable (and writable) by everyone."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.fixture
def modes_when_synced(monkeypatch):
    """The mode and size of every file at the moment its content is synced, i.e. once the secret is in it."""
    seen = []
    fsync = os.fsync

    def recording(fd):
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            seen.append((stat.S_IMODE(st.st_mode), st.st_size))
        fsync(fd)

    monkeypatch.setattr(team_stack.os, "fsync", recording)
    return seen


def test_the_state_file_with_the_database_password_is_0600_from_its_first_byte(tmp_path, umask_0, modes_when_synced):
    root = tmp_path / "stack"
    root.mkdir()
    (root / "stack.json").write_text("{}")  # one a former version left, world-readable
    (root / "stack.json").chmod(0o644)
    state = {"postgres": {"uri": "postgresql://mlflow:s3cret@127.0.0.1:5432/mlflow"}}
    team_stack.save_state(root, state)
    assert (root / "stack.json").stat().st_mode & 0o7777 == 0o600
    assert team_stack.load_state(root) == state
    assert modes_when_synced and all(mode == 0o600 for mode, _ in modes_when_synced), modes_when_synced
    assert sorted(p.name for p in root.iterdir()) == ["stack.json"]


def test_the_database_password_file_is_0600_from_its_first_byte(tmp_path, monkeypatch, umask_0, modes_when_synced):
    """start_postgres up to initdb, which is not run: the password file it would read."""
    commands = []
    monkeypatch.setattr(team_stack, "postgres_bindir", lambda: Path("/usr/lib/postgresql/0/bin"))
    monkeypatch.setattr(team_stack, "run", lambda cmd, what, log=None: commands.append(what))
    monkeypatch.setattr(team_stack.os, "geteuid", lambda: 1000)  # as a user: the database under the state folder
    state = {}
    team_stack.start_postgres(state, tmp_path)
    assert commands == ["initdb", "pg_ctl start", "createdb", "createdb"]  # the runs' database, the accounts'
    password_file = tmp_path / "postgres" / "password"
    assert password_file.stat().st_mode & 0o7777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) == 32 and f"mlflow:{password}@" in state["postgres"]["uri"]
    assert state["postgres"]["auth_uri"].endswith(f"mlflow:{password}@127.0.0.1:{state['postgres']['port']}/mlflow_auth")
    assert modes_when_synced == [(0o600, 33)]
    assert sorted(p.name for p in password_file.parent.iterdir()) == ["password"]


def test_every_secret_of_the_accounts_is_0600_from_its_first_byte_in_a_0700_folder(tmp_path, umask_0,
                                                                                     modes_when_synced):
    """The passwords, the secret key and MLflow's auth config (which holds the database URI with its password,
    a ``%`` in it doubled for configparser)."""
    import configparser

    state = {"postgres": {"auth_uri": "postgresql://mlflow:pa%25ss@127.0.0.1:5432/mlflow_auth"}}
    team_stack.write_secrets(state, tmp_path)
    auth = tmp_path / "auth"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o700
    assert sorted(p.name for p in auth.iterdir()) == ["admin.password", "basic_auth.ini", "pipeline.password",
                                                      "proxy_secret", "secret_key", "viewer.password"]
    assert len(modes_when_synced) == 6 and all(mode == 0o600 for mode, _ in modes_when_synced), modes_when_synced
    passwords = {p.read_text().strip() for p in auth.glob("*.password")}
    assert len(passwords) == 3 and all(len(p) >= 12 for p in passwords)  # MLflow's minimum
    config = configparser.ConfigParser()
    config.read(auth / "basic_auth.ini")
    assert config["mlflow"]["database_uri"] == "postgresql+psycopg://mlflow:pa%25ss@127.0.0.1:5432/mlflow_auth"
    assert config["mlflow"]["admin_password"] == (auth / "admin.password").read_text().strip()
    assert config["mlflow"]["default_permission"] == "READ"


def test_up_refuses_a_folder_that_holds_files_and_no_stack_and_starts_nothing(tmp_path):
    """`up` replaces a stopped stack's state; any other folder with files in it (`--dir .` in a checkout) is
    refused in one line, before anything is started or removed."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    result = run([*STACK, "up", "--dir", str(folder)],
                 tmp_path, clean_env(HOME=str(tmp_path)), check=False, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"team-stack: error: {folder} holds files and no team stack: give --dir an "
                                          "empty or a new folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize("command", ["env", "restart-mlflow"])
def test_a_stack_whose_up_failed_half_way_is_one_line_to_start_it_again(tmp_path, command):
    """`up` writes an empty state file first, so that a failed `up` can be run again: `env` and `restart-mlflow`
    then say the stack never finished starting, rather than ending in a KeyError."""
    folder = tmp_path / "stack"
    folder.mkdir()
    (folder / "stack.json").write_text("{}")
    result = run([*STACK, command, "--dir", str(folder)], tmp_path, clean_env(HOME=str(tmp_path)), check=False,
                 timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"team-stack: error: the team stack in {folder} did not finish starting "
                                          "(`make team-stack-up` starts it again)"]


def test_the_printed_lines_keep_paths_with_spaces_whole(tmp_path):
    """The lines a user pastes into bash: a state folder under a path with a space is still one word each."""
    root = tmp_path / "my stacks" / "team"
    (root / "auth").mkdir(parents=True)
    for account in ("pipeline", "optuna"):
        (root / "auth" / f"{account}.password").write_text(f"{account}-secret\n")
    state = {"mlflow": {"uri": "https://127.0.0.1:8443"}, "tls": {"ca": str(root / "tls" / "ca.crt")},
             "auth": {"dir": str(root / "auth")}, "postgres": {"port": 5433},
             "ssh": {"user": "me", "port": 2222, "remote": str(root / "dvc-remote"), "keyfile": str(root / "ssh key")}}
    lines = team_stack.env_lines(state)
    assert exported([line for line in lines if line.startswith("export ")], tmp_path, clean_env()) == {
        "MLFLOW_TRACKING_URI": "https://127.0.0.1:8443", "MLFLOW_TRACKING_SERVER_CERT_PATH": str(root / "tls" / "ca.crt"),
        "MLFLOW_TRACKING_USERNAME": "pipeline", "MLFLOW_TRACKING_PASSWORD": "pipeline-secret",
        "OPTUNA_STORAGE": "postgresql+psycopg://optuna:optuna-secret@127.0.0.1:5433/optuna"}
    import shlex

    assert [shlex.split(line) for line in lines[-2:]] == [
        ["dvc", "remote", "add", "-d", "team", f"ssh://me@127.0.0.1:2222{root / 'dvc-remote'}"],
        ["dvc", "remote", "modify", "--local", "team", "keyfile", str(root / "ssh key")]]


@pytest.mark.parametrize("command", ["up", "down", "env"])
def test_a_damaged_state_file_or_a_folder_that_cannot_be_made_is_one_line(tmp_path, command):
    folder = tmp_path / "stack"
    folder.mkdir()
    (folder / "stack.json").write_text('{"postgres": ')  # cut short
    result = run([*STACK, command, "--dir", str(folder)], tmp_path, clean_env(HOME=str(tmp_path)), check=False,
                 timeout=60)
    assert (result.returncode, len(result.stderr.splitlines())) == (1, 1), result.stderr
    assert result.stderr.startswith(f"team-stack: error: {folder / 'stack.json'} is no team stack's state (")
    assert result.stderr.rstrip().endswith("); move it aside")
    if command == "up":
        (tmp_path / "a file").write_text("")
        result = run([*STACK, "up", "--dir", str(tmp_path / "a file" / "stack")], tmp_path,
                     clean_env(HOME=str(tmp_path)), check=False, timeout=60)
        assert (result.returncode, result.stderr) == (1, f"team-stack: error: Not a directory: {tmp_path / 'a file' / 'stack'}\n")


def test_up_refuses_while_any_component_of_the_stack_lives_and_names_it(tmp_path):
    """A stack half gone (its MLflow server and nginx killed, PostgreSQL and sshd still up) is not replaced
    underneath its live processes: `up` names them and leaves everything as it was."""
    folder = tmp_path / "stack"
    data = folder / "pg" / "data"
    data.mkdir(parents=True)
    # a process whose command line names the data folder, as the postmaster's does
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(data)]) as sleeper:
        try:
            (data / "postmaster.pid").write_text(f"{sleeper.pid}\n{data}\n")
            state = {"postgres": {"dir": str(folder / "pg")}, "mlflow": {"pid": 2**22 + 1},
                     "ssh": {"pid": sleeper.pid, "started": team_stack.start_time(sleeper.pid)}}
            (folder / "stack.json").write_text(json.dumps(state))
            result = run([*STACK, "up", "--dir", str(folder)], tmp_path, clean_env(HOME=str(tmp_path)), check=False,
                         timeout=60)
        finally:
            sleeper.kill()
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"team-stack: error: a team stack is running from {folder} already "
                                          "(ssh, postgres; `make team-stack-down` stops it)"]
    assert json.loads((folder / "stack.json").read_text()) == state


def test_an_up_terminated_half_way_stops_what_it_started(tmp_path):
    """SIGTERM once PostgreSQL is up (the state file names it as soon as it starts): `up` stops it, exits
    143, and the next `up` or `down` finds a stopped stack."""
    folder = tmp_path / "stack"
    with subprocess.Popen([*STACK, "up", "--dir", str(folder)], cwd=tmp_path, env=clean_env(HOME=str(tmp_path)),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as up:
        deadline = time.monotonic() + 120
        while "postgres" not in json.loads((folder / "stack.json").read_text() if (folder / "stack.json").exists()
                                           else "{}"):
            assert up.poll() is None and time.monotonic() < deadline, up.communicate()
            time.sleep(0.05)
        up.send_signal(signal.SIGTERM)
        _, stderr = up.communicate(timeout=120)
    state = json.loads((folder / "stack.json").read_text())
    assert up.returncode == 143, stderr
    assert state["stopped"] is True and not team_stack.running(state), state
    assert not psutil.pid_exists(state.get("mlflow", {}).get("pid") or 2**22 + 1)
    result = run([*STACK, "down", "--purge", "--dir", str(folder)], tmp_path, clean_env(HOME=str(tmp_path)))
    assert result.stderr == "" and not folder.exists() and not Path(state["postgres"]["dir"]).exists()


def test_a_command_that_leaves_its_cause_in_a_log_fails_with_the_logs_error(tmp_path):
    """pg_ctl says only "Examine the log output": the error names the log's last FATAL or ERROR line."""
    log = tmp_path / "postgres.log"
    log.write_text('LOG:  could not bind IPv4 address "127.0.0.1": Address already in use\n'
                   "FATAL:  could not create any TCP/IP sockets\nLOG:  database system is shut down\n")
    with pytest.raises(team_stack.StackError) as failed:
        team_stack.run(["bash", "-c", "echo 'pg_ctl: could not start server' >&2; echo 'Examine the log output.' >&2; "
                        "exit 1"], "pg_ctl start", log=log)
    assert str(failed.value) == f"pg_ctl start failed: FATAL:  could not create any TCP/IP sockets (see {log})"


def test_pids_that_now_name_other_processes_are_not_the_stack_and_down_kills_none_of_them(tmp_path):
    """After a reboot a stopped stack's pids, and a stale postmaster.pid, may name other processes: `up` does not
    take them for the stack, and `down` signals none of them (a pid and its start time name one process)."""
    folder = tmp_path / "stack"
    data = folder / "pg" / "data"
    data.mkdir(parents=True)
    with subprocess.Popen(["sleep", "60"], start_new_session=True) as other:
        try:
            (data / "postmaster.pid").write_text(f"{other.pid}\n{data}\n")
            started = team_stack.start_time(other.pid)
            state = {"postgres": {"dir": str(folder / "pg"), "bindir": "/nonexistent"},
                     **{name: {"pid": other.pid, "started": started - 1} for name in ("mlflow", "nginx", "ssh")}}
            state["ssh"]["known_hosts_line"] = STACK_LINE
            assert team_stack.running(state) == [] and team_stack.running(
                {"ssh": {"pid": other.pid, "started": started}}) == ["ssh"]
            (folder / "stack.json").write_text(json.dumps(state))
            result = run([*STACK, "down", "--dir", str(folder)], tmp_path, clean_env(HOME=str(tmp_path)), check=False,
                         timeout=60)
            assert (result.returncode, result.stderr) == (0, ""), result.stderr
            assert other.poll() is None, "down signalled a process that is not the stack's"
        finally:
            other.kill()


def test_a_server_started_without_the_proxy_secret_lets_nothing_through(monkeypatch):
    """No secret in the server's environment is no secret to match: every request is refused, an empty
    header's too, rather than every one let through."""
    from flask import Flask

    monkeypatch.delenv(login_limit.PROXY_SECRET_VARIABLE, raising=False)
    for headers in ({}, {login_limit.PROXY_HEADER: ""}, {**basic("admin", "x" * 20), login_limit.PROXY_HEADER: ""}):
        with Flask(__name__).test_request_context("/api/2.0/mlflow/experiments/search", headers=headers):
            response = login_limit.authenticate()
        assert response.status_code == 403, headers
