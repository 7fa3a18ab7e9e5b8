import os

import pytest

from support import SYSTEM_DATA_DIR, clean_env

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
    """A temporary git copy of the project on which the whole pipeline ran once, on the real data.

    Shared by the slow tests: a test that changes params.yaml restores it
    (``git checkout params.yaml``) and reruns ``dvc repro`` before it ends.
    Returns (project path, output of the first ``dvc repro``).
    """
    from support import copy_project, run, set_param

    project = copy_project(tmp_path_factory.mktemp("pipeline") / "project")
    set_param(project, "data.mirrors", [])  # offline: the system copy is the source
    run(["git", "commit", "-qam", "offline params"], project)
    result = run(["dvc", "repro"], project)
    return project, result.stdout
