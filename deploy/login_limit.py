"""The team stack's limit on failed logins: MLflow's basic-auth check, refusing a client that keeps failing.

The MLflow server of the stack runs :func:`authenticate` as its
``authorization_function`` (``basic_auth.ini``). After :data:`LIMIT` failed
logins for one account from one client within :data:`WINDOW` seconds, that
client gets 429 Too Many Requests for that account, the right password
included, until its failures age out of the window: a guesser learns nothing
more, whatever it sends. The client is the address nginx saw (``X-Real-IP``,
which nginx sets and a client cannot), and the failures are counted in one
SQLite file the server's workers share (:data:`DATABASE`).

The server answers only requests that carry nginx's secret (:data:`PROXY_HEADER`,
which nginx sets on every request it passes on, whatever a client sent): its own
port on 127.0.0.1 is reachable by every local user, who would otherwise skip TLS,
nginx's rules and this limit, and set ``X-Real-IP`` at will.

Why here and not in nginx: nginx answers a request before it knows the
login's outcome, so a limit of its own can only count every request, or
change the status of a failure MLflow has already checked; a guesser would
still see 200 on a hit.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import sqlite3
import time
from pathlib import Path

LIMIT = 10
"""Failed logins one client may make for one account within :data:`WINDOW`; the next request is refused."""
WINDOW = 300
"""Seconds a failed login counts."""
PROXY_HEADER = "X-Team-Stack-Proxy"
"""The header nginx sends the server's secret in."""
PROXY_SECRET_VARIABLE = "TEAM_STACK_PROXY_SECRET"
"""Where the server finds that secret (its environment; the file ``auth/proxy_secret`` of the stack)."""
DATABASE = "failed_logins.db"
"""The SQLite file of the failures, beside the server's auth config (``MLFLOW_AUTH_CONFIG_PATH``): the stack's
secrets folder."""


def _database() -> contextlib.closing:
    path = Path(os.environ["MLFLOW_AUTH_CONFIG_PATH"]).parent / DATABASE
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("CREATE TABLE IF NOT EXISTS failures (client TEXT, username TEXT, at REAL)")
    return contextlib.closing(connection)


def authenticate():
    from flask import make_response, request
    from mlflow.server.auth import authenticate_request_basic_auth
    from werkzeug.datastructures import Authorization

    secret = os.environ.get(PROXY_SECRET_VARIABLE, "")  # none set: nothing gets through, rather than everything
    if not secret or not hmac.compare_digest(request.headers.get(PROXY_HEADER, "").encode(), secret.encode()):
        return make_response("this server answers through the team stack's nginx only (its https:// URI)\n", 403)
    credentials = request.authorization
    if credentials is None:  # no login attempted: MLflow's own 401 asks for one
        return authenticate_request_basic_auth()
    client, username, now = request.headers.get("X-Real-IP") or request.remote_addr or "?", credentials.username, time.time()
    with _database() as db:
        times = [at for (at,) in db.execute("SELECT at FROM failures WHERE client = ? AND username = ? AND at > ?",
                                            (client, username, now - WINDOW))]
    if len(times) >= LIMIT:
        wait = int(min(times) + WINDOW - now) + 1
        response = make_response(f"too many failed logins for {username!r} from {client}: retry in {wait} s\n", 429)
        response.headers["Retry-After"] = str(wait)
        return response
    result = authenticate_request_basic_auth()
    if not isinstance(result, Authorization):
        with _database() as db:
            db.execute("DELETE FROM failures WHERE at <= ?", (now - WINDOW,))
            db.execute("INSERT INTO failures VALUES (?, ?, ?)", (client, username, now))
    return result
