"""The team set-up, for real: `deploy/team_stack.py` starts PostgreSQL, an MLflow server on it with proxied
artifacts, and an SSH server holding a DVC remote, all on 127.0.0.1; the pipeline, a parallel sweep, a
teammate's clone and a server that goes away are run against it."""

import errno
import json
import os
import re
import signal
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import psutil
import pytest
from test_tracking import assert_champion_predicts_classes, assert_pipeline_tracked

from deploy import team_stack  # noqa: E402  (support puts the project on sys.path)
from pipeline.tune import wait_for  # noqa: E402
from support import PROJECT_ROOT, VENV_BIN, clean_env, fast_copy, run, set_param, stages_ran, stages_skipped

STACK = [sys.executable, str(PROJECT_ROOT / "deploy" / "team_stack.py")]
MAKE = ["make", "-s", "-C", str(PROJECT_ROOT), f"VENV={VENV_BIN.parent}"]
EXPERIMENT = REGISTERED = "fashion-mnist-softmax"
STAGES = ["fetch", "preprocess", "train_scratch", "train_concise", "train_baseline", "evaluate", "report"]


@dataclass
class Stack:
    root: Path
    state: dict
    lines: list[str]
    """What `up` printed: the three lines that point a clone at the stack."""
    env: dict
    """A clean environment with HOME where `up` trusted the SSH host key and MLFLOW_TRACKING_URI set."""

    @property
    def uri(self) -> str:
        return self.state["mlflow"]["uri"]

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def pids(self) -> list[int]:
        postmaster = Path(self.state["postgres"]["dir"]) / "data" / "postmaster.pid"
        return [self.state["mlflow"]["pid"], self.state["ssh"]["pid"], int(postmaster.read_text().split()[0])]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("team")
    home = base / "home"  # the stack trusts its SSH host key in ~/.ssh/known_hosts: this HOME's
    home.mkdir()
    env = clean_env(HOME=str(home))
    root = base / "stack"
    output = run([*MAKE, "team-stack-up", f"STACK_DIR={root}"], base, env).stdout
    state = json.loads((root / "stack.json").read_text())
    lines = [line for line in output.splitlines() if not line.startswith("#")]
    yield Stack(root, state, lines, {**env, "MLFLOW_TRACKING_URI": state["mlflow"]["uri"]})
    run([*MAKE, "team-stack-down", f"STACK_DIR={root}"], base, env, check=False)


@pytest.fixture(scope="module")
def team_project(stack, tmp_path_factory, system_data_dir):
    """A copy of the project (offline, the chapter's 10 epochs, a 30-iteration baseline) pointed at the stack by
    the three printed lines; the whole pipeline ran."""
    project = fast_copy(tmp_path_factory.mktemp("team-project") / "project")
    set_param(project, "train.epochs", 10)
    set_param(project, "baseline.max_iter", 30)  # as test_tracking's server project: good enough to check
    export, remote_add, remote_keyfile = stack.lines
    assert export == f"export MLFLOW_TRACKING_URI={stack.uri}"
    run(remote_add.split(), project, stack.env)
    run(remote_keyfile.split(), project, stack.env)
    run(["git", "commit", "-qam", "the team's remote"], project)
    first = run(["dvc", "repro"], project, stack.env).stdout
    assert stages_ran(first) == STAGES
    assert not (project / "mlflow.db").exists(), "a local store appeared: the tracking URI was ignored"
    run(["git", "add", "dvc.lock"], project)
    run(["git", "commit", "-qm", "pipeline ran on the team stack"], project)
    return project


def test_up_prints_three_lines_and_every_component_listens_on_loopback_only(stack):
    ssh = stack.state["ssh"]
    assert stack.lines == [
        f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{stack.state['mlflow']['port']}",
        f"dvc remote add -d team ssh://{ssh['user']}@127.0.0.1:{ssh['port']}{ssh['remote']}",
        f"dvc remote modify --local team keyfile {ssh['keyfile']}",
    ]
    ports = {stack.state[name]["port"] for name in ("postgres", "mlflow", "ssh")}
    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
    assert {c.laddr.port for c in listening} == ports
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    postmaster = psutil.Process(stack.pids()[2])
    assert postmaster.username() != "root" and "postgres" in postmaster.name()
    # the SSH server takes the key and nothing else
    sshd_config = (stack.root / "ssh" / "sshd_config").read_text()
    assert "PasswordAuthentication no" in sshd_config and "KbdInteractiveAuthentication no" in sshd_config
    # the backend store's password is not on any command line
    assert "postgresql://" not in " ".join(psutil.Process(stack.state["mlflow"]["pid"]).cmdline())


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


def test_push_to_the_ssh_remote_then_a_teammates_clone_pulls_and_logs_into_the_server(stack, team_project,
                                                                                      tmp_path):
    run(["dvc", "push"], team_project, stack.env)
    assert list(Path(stack.state["ssh"]["remote"]).rglob("*")), "nothing arrived in the remote"

    clone = tmp_path / "teammate"
    run(["git", "clone", "-q", str(team_project), str(clone)], tmp_path)
    assert not (clone / ".dvc" / "cache").exists() and not (clone / "models").exists()
    run(stack.lines[2].split(), clone, stack.env)  # the key stays out of git: config.local
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


def test_a_parallel_sweep_on_the_server_records_every_run_and_ends_with_the_best_champion(stack, team_project,
                                                                                           monkeypatch):
    """2 x 2 experiments, two at a time, all against the server; no file lock guards the registry there.
    The champion must be the version with the best validation accuracy, recomputed here from the runs."""
    grid = {(lr, wd): None for lr in (0.05, 0.2) for wd in (0.0001, 0.001)}  # none ran before: all train
    for lr, wd in grid:
        queued = run(["dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}", "-S", f"train.weight_decay={wd}",
                      "-S", "train.epochs=2"], team_project, stack.env).stdout
        grid[(lr, wd)] = re.search(r"Queued experiment '([\w-]+)'", queued).group(1)
    try:
        run(["dvc", "queue", "start", "-j", "2"], team_project, stack.env, timeout=1500)
        # pipeline.tune's own wait (`make tune`), its dvc calls run here, against the stack
        monkeypatch.chdir(team_project)
        for key, value in stack.env.items():
            monkeypatch.setenv(key, value)
        status = wait_for(list(grid.values()), timeout=1500, progress=False)
    finally:
        run(["dvc", "queue", "stop"], team_project, stack.env, check=False)
    assert sorted(status) == sorted(grid.values()) and set(status.values()) == {"Success"}, status

    client = stack.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    for (lr, _wd), name in grid.items():
        runs = [r for r in client.search_runs([experiment.experiment_id],
                                              filter_string=f"tags.dvc_exp_name = '{name}'")
                if r.info.run_name != "baseline"]  # the baseline's one run is shared: every evaluate tags it
        assert sorted(r.info.run_name for r in runs) == ["concise", "scratch"], name
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
    assert len(error) == 1 and "127.0.0.1" in error[0] and str(stack.state["mlflow"]["port"]) in error[0], error
    # no DVC out is half-written: each is absent or whole, and no temporary is left
    assert not list(team_project.rglob(".*.tmp"))
    for out in ("models/scratch.pt", "models/concise.pt"):
        if (team_project / out).exists():
            from softmax_regression.models import load_model
            load_model(team_project / out)

    restarted = run([*STACK, "restart-mlflow", "--dir", str(stack.root)], stack.root.parent, stack.env).stdout
    stack.state = json.loads((stack.root / "stack.json").read_text())
    assert stack.uri in restarted
    output = run(["dvc", "repro"], team_project, stack.env).stdout
    assert "evaluate" in stages_ran(output)
    assert run(["dvc", "status", "--json"], team_project, stack.env).stdout.strip() == "{}"
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], team_project)
    run(["dvc", "checkout", "--force"], team_project, stack.env)


def test_down_stops_everything(stack):
    pids = stack.pids()
    run([*MAKE, "team-stack-down", f"STACK_DIR={stack.root}"], stack.root.parent, stack.env)
    time.sleep(0.5)
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    ports = {stack.state[name]["port"] for name in ("postgres", "mlflow", "ssh")}
    assert not [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
    home_known_hosts = Path(stack.env["HOME"]) / ".ssh" / "known_hosts"
    assert "softmax-regression-team-stack" not in home_known_hosts.read_text()


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
    monkeypatch.setattr(team_stack, "run", lambda cmd, what: commands.append(what))
    monkeypatch.setattr(team_stack.os, "geteuid", lambda: 1000)  # as a user: the database under the state folder
    state = {}
    team_stack.start_postgres(state, tmp_path)
    assert commands == ["initdb", "pg_ctl start", "createdb"]
    password_file = tmp_path / "postgres" / "password"
    assert password_file.stat().st_mode & 0o7777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) == 32 and f"mlflow:{password}@" in state["postgres"]["uri"]
    assert modes_when_synced == [(0o600, 33)]
    assert sorted(p.name for p in password_file.parent.iterdir()) == ["password"]
