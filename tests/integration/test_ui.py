"""`make ui` (`python -m pipeline.ui`) on a project the pipeline ran in: one worker, no job consumers, and a
URL that opens the experiment on its training runs in a real headless Chromium."""

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from selenium.webdriver.support.ui import WebDriverWait

from support import PROJECT_ROOT, clean_env, free_port


@pytest.fixture(scope="module")
def ui(fast_project):
    project, _ = fast_project
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pipeline.ui", "--port", str(port)], cwd=project,
                               env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    lines = []
    try:
        while not any(line.strip().startswith("open ") for line in lines):
            line = process.stdout.readline()
            assert line, f"pipeline.ui ended before printing its URL: {process.stderr.read()[-2000:]}"
            lines.append(line)
        yield project, port, process, "".join(lines)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def store(project):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def experiment_id(project) -> str:
    return store(project).get_experiment_by_name("fashion-mnist-softmax").experiment_id


def latest_run_names(project, n: int = 4) -> set[str]:
    """The names of the experiment's ``n`` newest runs: the first rows of the UI's runs table."""
    runs = store(project).search_runs([experiment_id(project)], order_by=["attributes.start_time DESC"],
                                      max_results=n)
    return {run.info.run_name for run in runs}


def test_it_prints_the_url_of_the_experiments_training_runs(ui):
    project, port, _, printed = ui
    url = re.search(r"open (\S+)", printed)[1]
    assert url == f"http://127.0.0.1:{port}/#/experiments/{experiment_id(project)}/runs?workflowType=machine_learning"
    assert f"sqlite:///{project / 'mlflow.db'}" in printed


def test_it_runs_one_worker_and_no_job_consumers(ui):
    _, _, process, _ = ui
    below = psutil.Process(process.pid).children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in below]
    assert len(below) <= 2, commands  # `mlflow ui` and its one uvicorn worker
    assert not [c for c in commands if "huey" in c or "_job_runner" in c], commands


def test_the_url_opens_on_the_training_runs_table(ui, browser, tmp_path):
    project, _, _, printed = ui
    url = re.search(r"open (\S+)", printed)[1]
    names = latest_run_names(project)
    browser.get(url)

    def shows_the_runs(driver) -> bool:
        text = driver.find_element("tag name", "body").text
        return "matching runs" in text and all(name in text for name in names)

    try:
        WebDriverWait(browser, 90).until(shows_the_runs)
    finally:
        browser.save_screenshot(str(tmp_path / "mlflow-ui.png"))  # kept when the test fails
    assert "workflowType=machine_learning" in browser.current_url
    assert "overview" not in browser.current_url
    assert "Model registry" in browser.find_element("tag name", "body").text  # the model-training sidebar


def test_ctrl_c_stops_the_ui_and_its_server(ui):
    _, port, process, _ = ui
    below = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    gone, alive = psutil.wait_procs(below, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    deadline = time.monotonic() + 10
    import socket
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.2)
    pytest.fail(f"port {port} still answers after Ctrl-C")


def test_a_port_another_server_answers_on_fails_at_once_naming_it(store_root):
    """A second `make ui`, or another project's MLflow UI, holds the port and answers its health check: the command
    must not take that answer for its own server's and print a URL into the other store."""
    import http.server
    import threading

    class OtherUi(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtherUi)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    port = other.server_port
    # From the working tree (PYTHONPATH), in a folder holding an empty store: no pipeline needs to have run.
    process = subprocess.Popen([sys.executable, "-m", "pipeline.ui", "--params", str(PROJECT_ROOT / "params.yaml"),
                                "--port", str(port)], cwd=store_root, env=clean_env(PYTHONPATH=str(PROJECT_ROOT)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        other.shutdown()
        other.server_close()
    assert "open http" not in stdout + stderr
    assert process.returncode == 1, stdout + stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]  # above it: the store's INFO lines
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    assert re.fullmatch(rf"ui: error: port {port} of 127\.0\.0\.1 is in use .*--port \d+`", errors[0]), errors[0]


@pytest.mark.parametrize("host, base", [("127.0.0.1", "http://127.0.0.1:5123"), ("0.0.0.0", "http://127.0.0.1:5123"),
                                        ("::1", "http://[::1]:5123"), ("::", "http://[::1]:5123"),
                                        ("localhost", "http://localhost:5123")])
def test_the_printed_url_is_one_a_browser_on_this_machine_opens(host, base):
    """An address of every interface is reached on loopback; an IPv6 one goes in brackets."""
    from pipeline.ui import local_base

    assert local_base(host, 5123) == base
