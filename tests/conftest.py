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
