import os

import pytest

from support import SYSTEM_DATA_DIR, VENV_BIN, clean_env

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def system_data_dir():
    """The real Fashion-MNIST from Debian's dataset-fashion-mnist (installed by .ci/run)."""
    missing = [n for n in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
               if not (SYSTEM_DATA_DIR / n).is_file()]
    if missing:
        pytest.fail(f"real data missing in {SYSTEM_DATA_DIR}: apt-get install -y dataset-fashion-mnist")
    return SYSTEM_DATA_DIR


@pytest.fixture
def env():
    return clean_env()


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory, system_data_dir):
    """A real `git clone` of the project's HEAD on which the README's pipeline command ran once.

    Shared by the slow tests: a test that changes params.yaml restores it
    (``git checkout params.yaml``) and reruns ``dvc repro`` before it ends.
    Returns (project path, output of `make pipeline`). What `git status` and
    dvc.lock looked like right after that first run is kept beside the clone
    (``first-run-status.txt``, ``first-run-dvc.lock``) for the test that checks them.
    """
    from support import clone_project, run

    project = clone_project(tmp_path_factory.mktemp("pipeline") / "project")
    # The README's command, with the virtualenv this session already has. Its install step is
    # up to date: the stamp is newer than the clone's pyproject.toml (git keeps content, not times).
    os.utime(project / "pyproject.toml", (0, 0))
    result = run(["make", "pipeline", f"VENV={VENV_BIN.parent}"], project)
    (project.parent / "first-run-status.txt").write_text(run(["git", "status", "--porcelain"], project).stdout)
    (project.parent / "first-run-dvc.lock").write_bytes((project / "dvc.lock").read_bytes())
    return project, result.stdout


@pytest.fixture(scope="session")
def fast_project(tmp_path_factory, system_data_dir):
    """A copy (2 epochs, a 10-iteration baseline) where the whole pipeline ran once, dvc.lock committed
    (as `dvc exp run` needs). Returns (project, output of that first `dvc repro`).

    Shared by the tests of reruns, experiments, remotes and teammates: each
    puts back what it changes (params.yaml, outs, .dvc/config).
    """
    from support import fast_copy, run

    project = fast_copy(tmp_path_factory.mktemp("fast") / "project")
    first = run(["dvc", "repro"], project)
    run(["git", "add", "dvc.lock"], project)
    run(["git", "commit", "-qm", "pipeline ran"], project)
    return project, first.stdout
