"""A team stack on this machine: PostgreSQL, an MLflow server on it with proxied artifacts and
authentication, nginx terminating TLS in front of it, and an SSH server holding a DVC remote.
Everything listens on 127.0.0.1 only.

\b
  up              start them, print the lines that point a clone at them (no password: the file holding it)
  down            stop them and leave no process behind (--purge also deletes the state: runs, artifacts)
  env             print the lines again
  restart-mlflow  start the MLflow server again after it went away

State (databases, artifacts, keys, passwords, certificates, the remote, logs, pid files) lives in
the state folder (default .team-stack/, git-ignored), which only its owner enters; every secret is a
file only its owner reads.
The MLflow server runs MLflow's basic-auth app with its users in the stack's PostgreSQL: an admin,
`pipeline` (EDIT on the project's experiment and registered model: it runs `dvc repro` and moves
@champion) and `viewer` (READ, the default for every account). nginx serves it over TLS with a
certificate from a CA the stack makes, and the server answers nothing but nginx (a secret header
nginx adds: deploy/login_limit.py), so its own port on 127.0.0.1 opens no way around TLS, the
login limit or nginx's rules. PostgreSQL runs as an unprivileged user: as root, the Debian
user `postgres` (its data then lives in a folder under /tmp that user can reach). The SSH server
takes one key, generated here, and no password.
"""

from __future__ import annotations

import functools
import getpass
import glob
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import click
import login_limit  # beside this file: the script's folder is first on sys.path, as on the server's

from softmax_regression.atomic import write_bytes

STATE_FILE = "stack.json"
KNOWN_HOSTS_MARK = "softmax-regression-team-stack"
ADMIN, PIPELINE, VIEWER = "admin", "pipeline", "viewer"
ACCOUNTS = (ADMIN, PIPELINE, VIEWER)
PROXY_SECRET_FILE = "proxy_secret"
"""The secret nginx sends the MLflow server with every request (deploy/login_limit.py)."""
STUDY_ACCOUNT = STUDY_DATABASE = "optuna"
"""The PostgreSQL account and database of the Optuna studies (not an MLflow account)."""
PROJECT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


class StackError(RuntimeError):
    """A component would not start or stop."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_line(log: Path | None) -> str:
    """The last non-empty line of a log, to end a one-line error with."""
    lines = [x.strip() for x in log.read_text().splitlines() if x.strip()] if log is not None and log.exists() else []
    return f" ({lines[-1]}; see {log})" if lines else ""


def wait_until(check, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not come up within {timeout:.0f} s{last_line(log)}")
        time.sleep(0.2)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (/proc/<pid>/stat): a pid and its start time name
    one process, where after a reboot, or once the numbers wrap, a stack's pid alone may name another."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None, started: int | None = None) -> bool:
    """Process ``pid`` runs, and is the one that started at ``started`` where that is given."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or start_time(pid) == started


def write_atomically(path: Path, data: str | bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` whole or not at all, synced to disk, with permission bits ``mode``
    from the start (:func:`softmax_regression.atomic.write_bytes`). A symlink is followed: the file it
    points to is replaced, the link stays."""
    write_bytes(Path(os.path.realpath(path)), data.encode() if isinstance(data, str) else data, mode=mode,
                durable=True)


# --- PostgreSQL -----------------------------------------------------------------------------------

def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).resolve().parent
    raise StackError("PostgreSQL is not installed: apt-get install -y postgresql")


def as_db_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its commands as the Debian user ``postgres``."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres(state: dict, root: Path) -> None:
    bindir = postgres_bindir()
    if os.geteuid() == 0:
        pg_dir = Path(tempfile.mkdtemp(prefix="team-stack-pg-"))  # /tmp: reachable by the postgres user
        shutil.chown(pg_dir, "postgres", "postgres")
    else:
        pg_dir = root / "postgres"
        pg_dir.mkdir()
    password = secrets.token_hex(16)
    pwfile = pg_dir / "password"
    write_atomically(pwfile, password + "\n", 0o600)
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    data, log = pg_dir / "data", pg_dir / "postgres.log"
    port = free_port()
    state["postgres"] = {"dir": str(pg_dir), "port": port, "bindir": str(bindir)}
    run(as_db_user([str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "-E", "UTF8", "--no-instructions",
                    "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]), "initdb")
    # Local connections are trusted (initdb above): the socket is its owner's alone, as is its folder.
    run(as_db_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {pg_dir} -c unix_socket_permissions=0700",
                    "start"]), "pg_ctl start", log=log)
    for database in ("mlflow", "mlflow_auth"):  # the runs and registry; MLflow's accounts and permissions
        run(as_db_user([str(bindir / "createdb"), "-h", str(pg_dir), "-p", str(port), "-U", "mlflow", database]),
            "createdb")
    state["postgres"]["uri"] = f"postgresql://mlflow:{password}@127.0.0.1:{port}/mlflow"
    state["postgres"]["auth_uri"] = f"postgresql://mlflow:{password}@127.0.0.1:{port}/mlflow_auth"


def postgres_pid(state: dict) -> int | None:
    """The pid of the stack's postmaster, from its pid file: None where it is not running, never started, or
    the file is stale (its pid now names a process that is no postmaster of this data folder)."""
    data = Path(state.get("postgres", {}).get("dir") or "/nonexistent") / "data"
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(data).encode() in command else None


def stop_postgres(state: dict) -> None:
    pg = state.get("postgres")
    if not pg:
        return
    data = Path(pg["dir"]) / "data"
    if alive(postgres_pid(state)):
        run(as_db_user([str(Path(pg["bindir"]) / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            "pg_ctl stop")


# --- MLflow ---------------------------------------------------------------------------------------

# --- secrets and certificates ---------------------------------------------------------------------

def secret_file(root: Path, name: str) -> Path:
    return root / "auth" / name


def read_secret(root: Path, name: str) -> str:
    return secret_file(root, name).read_text().strip()


def write_secrets(state: dict, root: Path) -> None:
    """A password per account, the Flask secret key, and MLflow's auth config (the accounts' database URI
    with its password, the admin's name and password): files of mode 0600 in a folder of mode 0700.
    No secret goes on a command line; the server reads the config by path and the key by environment."""
    folder = root / "auth"
    folder.mkdir(mode=0o700)
    for account in ACCOUNTS:
        write_atomically(secret_file(root, f"{account}.password"), secrets.token_urlsafe(24) + "\n", 0o600)
    write_atomically(secret_file(root, "secret_key"), secrets.token_hex(32) + "\n", 0o600)
    write_atomically(secret_file(root, PROXY_SECRET_FILE), secrets.token_hex(32) + "\n", 0o600)
    database = state["postgres"]["auth_uri"].replace("postgresql://", "postgresql+psycopg://", 1)
    write_atomically(secret_file(root, "basic_auth.ini"), "\n".join([
        "[mlflow]",
        "default_permission = READ",  # viewer's level, and every account's where it holds no grant
        f"database_uri = {database.replace('%', '%%')}",  # configparser interpolates %
        f"admin_username = {ADMIN}",
        f"admin_password = {read_secret(root, f'{ADMIN}.password')}",
        "auth_cache_ttl_seconds = 30",  # a login costs a scrypt hash: cached per worker, not per request
        "authorization_function = login_limit:authenticate",  # MLflow's check, refusing a client that keeps failing
        "",
    ]), 0o600)
    state["auth"] = {"dir": str(folder), "accounts": list(ACCOUNTS)}


def create_study_database(state: dict, root: Path) -> None:
    """The database of the Optuna studies (docs/tuning.md) and its own account, ``optuna``, which can connect to
    it and to nothing else: the MLflow databases no longer let every role connect. Its password is a file of
    the secrets folder; the SQL that sets it goes to psql on its standard input."""
    pg = state["postgres"]
    password = secrets.token_hex(16)
    write_atomically(secret_file(root, f"{STUDY_ACCOUNT}.password"), password + "\n", 0o600)
    sql = "\n".join([
        f"CREATE ROLE {STUDY_ACCOUNT} LOGIN PASSWORD '{password}';",
        f"CREATE DATABASE {STUDY_DATABASE} OWNER {STUDY_ACCOUNT};",
        f"REVOKE ALL ON DATABASE {STUDY_DATABASE} FROM PUBLIC;",
        "REVOKE CONNECT ON DATABASE mlflow, mlflow_auth, postgres FROM PUBLIC;",
        "",
    ])
    run(as_db_user([str(Path(pg["bindir"]) / "psql"), "-h", pg["dir"], "-p", str(pg["port"]), "-U", "mlflow",
                    "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-"]), "creating the study database",
        stdin=sql)
    pg["study_database"] = STUDY_DATABASE


def make_certificates(state: dict, root: Path) -> None:
    """A CA of the stack's own (``ca.crt``: what clients trust, MLFLOW_TRACKING_SERVER_CERT_PATH) and the
    certificate it signs for nginx, valid for 127.0.0.1 and localhost."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = root / "tls"
    folder.mkdir(mode=0o700)
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject: str, key, issuer: str, issuer_key, ca: bool):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                            critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = "softmax-regression team stack CA"
    ca = certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    server = certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    write_atomically(folder / "ca.crt", ca.public_bytes(pem), 0o644)
    write_atomically(folder / "server.crt", server.public_bytes(pem), 0o644)
    write_atomically(folder / "server.key", server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
    state["tls"] = {"ca": str(folder / "ca.crt")}


def tls_context(state: dict):
    import ssl

    return ssl.create_default_context(cafile=state["tls"]["ca"])


# --- MLflow ---------------------------------------------------------------------------------------

def start_mlflow(state: dict, root: Path, port: int | None = None) -> None:
    """``mlflow server`` with MLflow's basic-auth app, on PostgreSQL, uploading and serving artifacts itself
    (``--artifacts-destination``: clients send them through the server), on 127.0.0.1 for nginx to reach.
    The database URI goes by environment, the auth config by path, the secret key by environment: none on
    the command line."""
    port = port or free_port()
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    log = root / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_BACKEND_STORE_URI": state["postgres"]["uri"],
           "MLFLOW_AUTH_CONFIG_PATH": str(secret_file(root, "basic_auth.ini")),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": read_secret(root, "secret_key"),
           login_limit.PROXY_SECRET_VARIABLE: read_secret(root, PROXY_SECRET_FILE),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job workers: this stack runs no GenAI jobs
           # deploy/login_limit.py, the server's authorization_function
           "PYTHONPATH": os.pathsep.join(filter(None, (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH"))))}
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                     "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        env.pop(variable, None)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth",
             "--host", "127.0.0.1", "--port", str(port), "--artifacts-destination", artifacts.as_uri(),
             "--workers", "2"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    state["mlflow"] = {**state.get("mlflow", {}), "pid": process.pid, "started": start_time(process.pid),
                       "port": port, "internal_uri": uri,
                       "artifacts": str(artifacts)}

    def healthy() -> bool:
        if process.poll() is not None:
            raise StackError(f"mlflow server exited {process.returncode}{last_line(log)}")
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(healthy, "mlflow server", 120, log)


# --- nginx ----------------------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {temporary}/body;
    proxy_temp_path {temporary}/proxy;
    fastcgi_temp_path {temporary}/fastcgi;
    uwsgi_temp_path {temporary}/uwsgi;
    scgi_temp_path {temporary}/scgi;
    server {{
        # TLS only: a plain HTTP request to this port gets nginx's 400 and never reaches MLflow.
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tls}/server.crt;
        ssl_certificate_key {tls}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 0;          # model files and figures go up through the artifact proxy
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_read_timeout 600s;
        # Every account could list every user name (MLflow lets any workspace member read the roster); no one
        # needs it through this door: the admin's scripts do not use it, and the accounts are in auth/.
        location ~ ^/(ajax-)?api/[0-9.]+/mlflow/users/list {{
            return 403;
        }}
        location / {{
            # HTTP Basic only, the one scheme MLflow's basic-auth takes: its login cache fails (500) on others.
            if ($http_authorization !~* "^(Basic .*)?$") {{
                return 401;
            }}
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;   # 127.0.0.1: among MLflow's allowed hosts
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;   # the client the login limit counts (login_limit.py)
            proxy_set_header {proxy_header} {proxy_secret};   # what the server takes requests with: nginx's
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def start_nginx(state: dict, root: Path) -> None:
    """nginx (Debian's) in the foreground of its own process group, from a folder of the stack's: TLS on a
    port of 127.0.0.1 with the stack's certificate, proxying to the MLflow server."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise StackError("nginx is not installed: apt-get install -y nginx")
    prefix = root / "nginx"
    prefix.mkdir()
    # Its workers buffer request bodies there: as root they run as `nobody`, who may not reach the state folder.
    temporary = Path(tempfile.mkdtemp(prefix="team-stack-nginx-"))
    if os.geteuid() == 0:
        shutil.chown(temporary, "nobody", "nogroup")
    port = free_port()
    conf = prefix / "nginx.conf"  # holds the proxy secret: its owner's alone
    write_atomically(conf, NGINX_CONF.format(prefix=prefix, temporary=temporary, port=port, tls=root / "tls",
                                             upstream=state["mlflow"]["internal_uri"],
                                             proxy_header=login_limit.PROXY_HEADER,
                                             proxy_secret=read_secret(root, PROXY_SECRET_FILE)), 0o600)
    state["nginx"] = {"port": port, "temporary": str(temporary)}
    log = prefix / "error.log"
    command = [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(log),
               "-g", f"daemon off; pid {prefix / 'nginx.pid'}; error_log {log};"]
    run([*command[:-2], "-t", *command[-2:]], "nginx -t")
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    state["nginx"].update(pid=process.pid, started=start_time(process.pid))
    state["mlflow"]["uri"] = f"https://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise StackError(f"nginx exited {process.returncode}{last_line(log)}")
        try:
            with urllib.request.urlopen(state["mlflow"]["uri"] + "/health", timeout=2,
                                        context=tls_context(state)) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(healthy, "nginx", 30, log)


# --- the accounts ---------------------------------------------------------------------------------

def api(state: dict, root: Path, method: str, path: str, body: dict | None = None, account: str = ADMIN) -> dict:
    """A request to the MLflow server's REST API through nginx, as ``account``; the parsed answer."""
    import base64

    token = base64.b64encode(f"{account}:{read_secret(root, f'{account}.password')}".encode()).decode()
    request = urllib.request.Request(
        state["mlflow"]["uri"] + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30, context=tls_context(state)) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise StackError(f"{method} {path} as {account}: HTTP {exc.code} {exc.read()[:200]!r}") from None


def project_names() -> tuple[str, str]:
    """The project's experiment and registered model (params.yaml, tracking)."""
    from softmax_regression.params import load_params

    tracking = load_params(PROJECT_PARAMS)["tracking"]
    return tracking["experiment"], tracking["registered_model"]


def create_accounts(state: dict, root: Path) -> None:
    """As the admin: the project's experiment and registered model, the accounts ``pipeline`` and
    ``viewer``, and pipeline's EDIT on both (viewer has READ, everyone's default). Created here, the two
    belong to the admin: an account that created them would MANAGE them."""
    from softmax_regression.tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    experiment, registered = project_names()
    experiment_id = api(state, root, "POST", "/api/2.0/mlflow/experiments/create", {
        "name": experiment, "tags": [{"key": EXPERIMENT_KIND_TAG, "value": EXPERIMENT_KIND}]})["experiment_id"]
    api(state, root, "POST", "/api/2.0/mlflow/registered-models/create", {"name": registered})
    for account in (PIPELINE, VIEWER):
        api(state, root, "POST", "/api/2.0/mlflow/users/create",
            {"username": account, "password": read_secret(root, f"{account}.password")})
    for resource_type, resource_id in (("experiment", experiment_id), ("registered_model", registered)):
        api(state, root, "POST", "/api/3.0/mlflow/users/permissions/grant", {
            "username": PIPELINE, "resource_type": resource_type, "resource_id": resource_id, "permission": "EDIT"})
    state["auth"].update(experiment=experiment, experiment_id=experiment_id, registered_model=registered)


def stop_component(state: dict, name: str, timeout: float = 20) -> None:
    """Stop the process group of the stack's component ``name``, if its process still runs."""
    pid, started = state.get(name, {}).get("pid"), state.get(name, {}).get("started")
    if not alive(pid, started):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid, started) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.1)
    if alive(pid, started):
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.2)
    reap(pid)


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --- SSH ------------------------------------------------------------------------------------------

def start_sshd(state: dict, root: Path) -> None:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        raise StackError("the SSH server is not installed: apt-get install -y openssh-server")
    ssh_dir = root / "ssh"
    ssh_dir.mkdir(mode=0o700)
    for key in ("host_ed25519", "client_ed25519"):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", KNOWN_HOSTS_MARK, "-f", str(ssh_dir / key)],
            "ssh-keygen")
    (ssh_dir / "authorized_keys").write_text((ssh_dir / "client_ed25519.pub").read_text())
    remote = root / "dvc-remote"
    remote.mkdir()
    port = free_port()
    config = ssh_dir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {ssh_dir / 'host_ed25519'}",
        f"PidFile {ssh_dir / 'sshd.pid'}", f"AuthorizedKeysFile {ssh_dir / 'authorized_keys'}",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "Subsystem sftp internal-sftp", "",
    ]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = ssh_dir / "sshd.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    host_key = (ssh_dir / "host_ed25519.pub").read_text().split()
    state["ssh"] = {"pid": process.pid, "started": start_time(process.pid), "port": port, "user": getpass.getuser(),
                    "remote": str(remote), "keyfile": str(ssh_dir / "client_ed25519"),
                    "known_hosts_line": f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]} {KNOWN_HOSTS_MARK}"}

    def listening() -> bool:
        if process.poll() is not None:
            raise StackError(f"sshd exited {process.returncode}{last_line(log)}")
        return port_open(port)

    wait_until(listening, "sshd", 30, log)
    trust_host_key(state["ssh"]["known_hosts_line"])


def known_hosts_file() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "known_hosts"


def trust_host_key(line: str) -> None:
    """Add the stack's host key to ~/.ssh/known_hosts, as `ssh-keyscan >> known_hosts` would (the SSH
    client DVC uses checks host keys there); `down` takes it out again."""
    path = known_hosts_file()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with open(path, "ab+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():  # a last line without its newline would run into ours
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode() + b"\n")


def distrust_host_key(line: str) -> None:
    """Take the stack's host key out of ~/.ssh/known_hosts again; every other byte and the file's mode stay.
    The file is replaced at once (:func:`write_atomically`): an interruption cannot leave it cut short."""
    path = known_hosts_file()
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    kept = [x for x in lines if x.strip() != line.encode()]
    if len(kept) < len(lines):
        write_atomically(path, b"\n".join(kept), stat.S_IMODE(path.stat().st_mode))


# --- the stack ------------------------------------------------------------------------------------

def run(cmd: list[str], what: str, stdin: str | None = None, log: Path | None = None) -> None:
    """Run ``cmd``; ``stdin`` is what it reads (SQL holding a password: never on a command line). A command
    that sends its cause to ``log`` (pg_ctl: "Examine the log output") fails with the log's own error."""
    result = subprocess.run(cmd, capture_output=True, text=True, input=stdin,
                            stdin=subprocess.DEVNULL if stdin is None else None)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        logged = [line.strip() for line in log.read_text(errors="replace").splitlines()
                  if "FATAL" in line or "ERROR" in line] if log is not None and log.exists() else []
        if logged:
            raise StackError(f"{what} failed: {logged[-1]} (see {log})")
        raise StackError(f"{what} failed: {detail[-1] if detail else f'exit {result.returncode}'}")


def env_lines(state: dict) -> list[str]:
    """What points a clone at the stack: the server, the CA to trust, the pipeline's account (its password
    by the file that holds it, never the password itself), the study database (the same way) and the DVC
    remote."""
    ssh, q = state["ssh"], shlex.quote  # a path with a space stays one word where bash reads the line
    url = f"ssh://{ssh['user']}@127.0.0.1:{ssh['port']}{ssh['remote']}"
    password_file = Path(state["auth"]["dir"]) / f"{PIPELINE}.password"
    study_password_file = Path(state["auth"]["dir"]) / f"{STUDY_ACCOUNT}.password"
    return [
        f"export MLFLOW_TRACKING_URI={state['mlflow']['uri']}",
        f"export MLFLOW_TRACKING_SERVER_CERT_PATH={q(state['tls']['ca'])}",
        f"export MLFLOW_TRACKING_USERNAME={PIPELINE}",
        f'export MLFLOW_TRACKING_PASSWORD="$(cat {q(str(password_file))})"',
        f'export OPTUNA_STORAGE="postgresql+psycopg://{STUDY_ACCOUNT}:$(cat {q(str(study_password_file))})'
        f'@127.0.0.1:{state["postgres"]["port"]}/{STUDY_DATABASE}"',
        f"dvc remote add -d team {q(url)}",
        f"dvc remote modify --local team keyfile {q(ssh['keyfile'])}",
    ]


def load_state(root: Path) -> dict:
    path = root / STATE_FILE
    if not path.exists():
        raise StackError(f"no team stack in {root} (`make team-stack-up` starts one)")
    try:
        state = json.loads(path.read_text())
    except ValueError as exc:
        raise StackError(f"{path} is no team stack's state ({exc}); move it aside") from None
    if not isinstance(state, dict):
        raise StackError(f"{path} is no team stack's state (not a mapping); move it aside")
    return state


def started_state(root: Path) -> dict:
    """The state of a running stack: not one whose ``up`` failed half-way (its state stops at the last
    component it started) or one ``down`` stopped."""
    state = load_state(root)
    if "ssh" not in state:  # the last component ``up`` starts
        raise StackError(f"the team stack in {root} did not finish starting (`make team-stack-up` starts it again)")
    if state.get("stopped"):
        raise StackError(f"the team stack in {root} is stopped (`make team-stack-up` starts a new one)")
    return state


def running(state: dict) -> list[str]:
    """The components of ``state`` whose process is alive."""
    started = [name for name in ("mlflow", "nginx", "ssh")
               if alive(state.get(name, {}).get("pid"), state.get(name, {}).get("started"))]
    return started + ["postgres"] * alive(postgres_pid(state))


def remove_state(root: Path, state: dict) -> None:
    """Delete a stopped stack's state: the folder, and PostgreSQL's data where it lives outside it (as root)."""
    if state.get("postgres", {}).get("dir") and not Path(state["postgres"]["dir"]).is_relative_to(root):
        shutil.rmtree(state["postgres"]["dir"], ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def terminated(signum: int, frame) -> None:
    """SIGTERM or SIGHUP during ``up``: an exception, so that what was started is stopped."""
    raise SystemExit(128 + signum)


def save_state(root: Path, state: dict) -> None:
    """The state file holds the database password (in the backend store's URI): 0600, written at once."""
    write_atomically(root / STATE_FILE, json.dumps(state, indent=2), 0o600)


def up(root: Path) -> dict:
    if (root / STATE_FILE).exists():
        old = load_state(root)
        live = running(old)
        if live:  # any of them: a stack half gone is stopped by `down`, not left behind
            raise StackError(f"a team stack is running from {root} already ({', '.join(live)}; "
                             "`make team-stack-down` stops it)")
        click.echo(f"team-stack: replacing the stopped stack's state in {root} (its runs, artifacts and remote)",
                   err=True)
        remove_state(root, old)
    elif root.exists() and any(root.iterdir()):  # `--dir .` must not wipe a checkout
        raise StackError(f"{root} holds files and no team stack: give --dir an empty or a new folder")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)  # the runs, the artifacts and the remote: the stack's accounts decide who reads them
    state: dict = {}
    save_state(root, state)  # from here the folder is a stack's: an `up` that fails half-way can be run again
    handlers = {signum: signal.signal(signum, terminated) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for start in (start_postgres, write_secrets, create_study_database, make_certificates, start_mlflow,
                      start_nginx, create_accounts, start_sshd):
            start(state, root)
            save_state(root, state)  # what `down` needs to stop, should this process be killed outright
    except BaseException:
        for signum in handlers:
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the stopping short
        down(root, state)
        raise
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return state


def down(root: Path, state: dict | None = None) -> None:
    """Stop every component; the state stays (its runs, artifacts and remote) until ``up`` or ``--purge``."""
    state = state if state is not None else load_state(root)
    errors = []
    for stop in (lambda: stop_component(state, "nginx"), lambda: stop_component(state, "mlflow"),
                 lambda: stop_component(state, "ssh"), lambda: stop_postgres(state)):
        try:
            stop()
        except StackError as exc:
            errors.append(str(exc))
    if state.get("ssh"):
        distrust_host_key(state["ssh"]["known_hosts_line"])
    if state.get("nginx", {}).get("temporary"):
        shutil.rmtree(state["nginx"]["temporary"], ignore_errors=True)
    if errors:
        raise StackError("; ".join(errors))
    if (root / STATE_FILE).exists():
        save_state(root, {**state, "stopped": True})


root_option = click.option("--dir", "root", default=".team-stack", show_default=True,
                           type=click.Path(file_okay=False, path_type=Path), help="The stack's state folder.")


@click.group(help=__doc__)
def main() -> None:
    pass


def stack_errors(command):
    """A command whose :class:`StackError`, or an error of the system (a folder it cannot make), ends it with one
    line on stderr and exit 1."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except StackError as exc:
            click.echo(f"team-stack: error: {exc}", err=True)
        except OSError as exc:
            click.echo(f"team-stack: error: {exc.strerror or exc}: {exc.filename}" if exc.filename else
                       f"team-stack: error: {exc}", err=True)
        sys.exit(1)
    return run


@main.command("up", help="Start PostgreSQL, the MLflow server behind nginx and the SSH server; print how to use them. "
              "A new stack: the state a stopped one left in the folder is replaced.")
@root_option
@stack_errors
def up_command(root: Path) -> None:
    state = up(root.resolve())
    click.echo(f"# the team stack is up: {state['mlflow']['uri']} (accounts {', '.join(ACCOUNTS)}; passwords in "
               f"{state['auth']['dir']}); in a clone of the project:")
    for line in env_lines(state):
        click.echo(line)


@main.command("down", help="Stop the stack; nothing keeps running.")
@root_option
@click.option("--purge", is_flag=True, help="Also delete the state folder (runs, artifacts, the remote) now; "
              "without it they stay until the next `up` replaces them.")
@stack_errors
def down_command(root: Path, purge: bool) -> None:
    root = root.resolve()
    state = load_state(root)
    down(root, state)
    if purge:
        remove_state(root, state)
    click.echo("team-stack: stopped")


@main.command("restart-mlflow", help="Start the MLflow server again, on its port and store (after it went away).")
@root_option
@stack_errors
def restart_mlflow_command(root: Path) -> None:
    root = root.resolve()
    state = started_state(root)
    if not alive(postgres_pid(state)):  # the server would retry its database for minutes, then fail unclearly
        raise StackError(f"PostgreSQL of the team stack in {root} is not running: `make team-stack-down`, then "
                         "`make team-stack-up` starts a new stack")
    stop_component(state, "mlflow")
    start_mlflow(state, root, state["mlflow"]["port"])  # on its port: nginx proxies there
    save_state(root, state)
    click.echo(f"export MLFLOW_TRACKING_URI={state['mlflow']['uri']}")


@main.command("env", help="Print the lines that point a clone at the running stack.")
@root_option
@stack_errors
def env_command(root: Path) -> None:
    for line in env_lines(started_state(root.resolve())):
        click.echo(line)


if __name__ == "__main__":
    main()
