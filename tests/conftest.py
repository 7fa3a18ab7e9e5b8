import ast
import functools
import os
import shutil
from pathlib import Path

import pytest

from support import SYSTEM_DATA_DIR, VENV_BIN, clean_env, stack_installed

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


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A real headless Chromium (Debian's chromium and chromium-driver, installed by .ci/run) that logs its
    network requests and its console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--window-size=1280,1024",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def env():
    return clean_env()


@pytest.fixture
def no_proxy_for_localhost(monkeypatch):
    """urllib honours the *_proxy variables: a test server on 127.0.0.1 must be reached directly."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def empty_store_file(tmp_path_factory) -> Path:
    """An ``mlflow.db`` as ``store.configure`` creates it in an empty folder: MLflow takes a second or more to
    create its tables, so a test's store starts as a copy of this one."""
    from support import tracking_store

    root = tmp_path_factory.mktemp("empty-store")
    with tracking_store(root):
        pass
    return root / "mlflow.db"


@pytest.fixture
def store_root(tmp_path, empty_store_file) -> Path:
    """``tmp_path`` holding an empty store, as ``tracking_store(tmp_path)`` would create it."""
    shutil.copyfile(empty_store_file, tmp_path / "mlflow.db")
    return tmp_path


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory, system_data_dir):
    """A real `git clone` of the project's HEAD on which the README's pipeline command ran once.

    Shared by the integration tests: a test that changes params.yaml restores it
    (``git checkout params.yaml``) and reruns ``dvc repro`` before it ends.
    Returns (project path, output of `make pipeline`). What `git status` and
    dvc.lock looked like right after that first run is kept beside the clone
    (``first-run-status.txt``, ``first-run-dvc.lock``) for the test that checks them.
    """
    from support import clone_project, run

    project = clone_project(tmp_path_factory.mktemp("pipeline") / "project")
    # The README's command, with the virtualenv this session already has: its install step is up to date.
    stack_installed(project)
    result = run(["make", "pipeline", f"VENV={VENV_BIN.parent}"], project)
    (project.parent / "first-run-status.txt").write_text(run(["git", "status", "--porcelain"], project).stdout)
    (project.parent / "first-run-dvc.lock").write_bytes((project / "dvc.lock").read_bytes())
    return project, result.stdout


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory, worker_id) -> Path:
    """A folder all xdist workers of this session share (each worker's own basetemp is one level down)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def fast_build(shared_root, system_data_dir) -> tuple[Path, str]:
    """A copy of the project (2 epochs, a 10-iteration baseline) where the whole pipeline ran once, dvc.lock
    committed (as `dvc exp run` needs): built once per session, by whichever worker needs it first, and never
    changed afterwards. Tests take copies of it (:func:`fast_copy_of_build`). Returns (project, output of that
    first `dvc repro`)."""
    import fcntl

    from support import fast_copy, run

    home = shared_root / "fast-build"
    home.mkdir(exist_ok=True)
    project, output = home / "project", home / "first-repro.txt"
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits here while one builds
        if not output.is_file():
            shutil.rmtree(project, ignore_errors=True)  # a build that failed half-way
            fast_copy(project)
            first = run(["dvc", "repro"], project)
            run(["git", "add", "dvc.lock"], project)
            run(["git", "commit", "-qm", "pipeline ran"], project)
            output.write_text(first.stdout)
    return project, output.read_text()


def fast_copy_of_build(fast_build: tuple[Path, str], dest: Path) -> tuple[Path, str]:
    """A copy of the session's fast build at ``dest`` (big files hard-linked, see ``support.link_or_copy``), its
    MLflow store pointed at the copy's own ``mlruns/`` as a stage of the copy would point it."""
    from softmax_regression.tracking import store
    from support import link_or_copy

    project = Path(shutil.copytree(fast_build[0], dest, symlinks=True, copy_function=link_or_copy))
    store.relocate_copied_store(f"sqlite:///{project / 'mlflow.db'}", project)
    return project, fast_build[1]


@pytest.fixture(scope="session")
def fast_project(tmp_path_factory, fast_build):
    """A copy of :func:`fast_build`, shared by the tests of reruns, experiments and remotes: each puts back
    what it changes (params.yaml, outs, .dvc/config)."""
    return fast_copy_of_build(fast_build, tmp_path_factory.mktemp("fast") / "project")


@pytest.fixture(scope="session")
def fault_project(tmp_path_factory, fast_build):
    """Another copy of :func:`fast_build`, for the fault and teammate tests, so that under xdist they run beside
    the experiments instead of after them. They copy it, or put back what they change."""
    return fast_copy_of_build(fast_build, tmp_path_factory.mktemp("fault") / "project")

SHARED_PROJECTS = ("pipeline_project", "fast_project", "fault_project")
"""The session fixtures that build a whole pipeline: under xdist (`make test`), each is built once."""


@functools.cache
def work_unit(module_path: str) -> str:
    """The xdist work unit of a test module: the shared project its tests or fixtures take, else the module.

    All tests of a unit run on one worker, in order, so a shared project and a module's own fixtures are
    built once. Read from the module's source (function parameters), as the scheduler sees node ids only.
    """
    tree = ast.parse(Path(module_path).read_text())
    parameters = {arg.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for arg in node.args.args}
    shared = [name for name in SHARED_PROJECTS if name in parameters]
    if len(shared) > 1:
        raise pytest.UsageError(f"{module_path} takes {' and '.join(shared)}: split it, one shared project per module")
    return shared[0] if shared else module_path


def pytest_xdist_make_scheduler(config, log):
    """`pytest -n 2 --dist loadscope` with :func:`work_unit` as the scope (xdist's `loadgroup` marks are
    not applied under pytest 9). The two long units go first, one per worker; the short ones fill in."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedProjectScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(str(config.rootpath / nodeid.split("::", 1)[0]))

    return SharedProjectScheduling(config, log)


LONG_MODULES = ("test_team_stack.py",)
"""Modules that take minutes on their own: handed out right after the shared projects."""


UNIT_DIR = Path(__file__).parent / "unit"
"""`make test-fast` runs this folder: tests that build no pipeline and start no server."""


def pytest_collect_file(file_path, parent):
    """Test modules are imported by their base name (rootdir-relative, no packages): two of one name in
    unit/ and integration/ would collide, so a second one is an error naming both."""
    if file_path.name.startswith("test_") and file_path.suffix == ".py":
        twins = [p for p in Path(__file__).parent.glob(f"*/{file_path.name}") if p != file_path]
        if twins:
            raise pytest.UsageError(f"{file_path} and {twins[0]} share a name: rename one")


def pytest_collection_modifyitems(config, items):
    """The long work units first, the shared projects' then the long modules' (a stable sort: each keeps
    its tests' order), so that with `--no-loadscope-reorder` xdist starts them before the short ones.
    A unit test that takes a shared project or the real data is an error: it belongs in ``integration/``
    (`make test-fast` runs where Debian's data package is not installed)."""
    misplaced = sorted({item.nodeid for item in items if UNIT_DIR in item.path.parents
                        and set(getattr(item, "fixturenames", ())) & {*SHARED_PROJECTS, "system_data_dir"}})
    if misplaced:
        raise pytest.UsageError(f"unit tests take a pipeline build or the real data (move them to tests/integration): "
                                f"{', '.join(misplaced)}")
    first = [*SHARED_PROJECTS, *LONG_MODULES]

    def rank(item) -> int:
        unit = work_unit(str(item.path))
        name = unit if unit in SHARED_PROJECTS else Path(unit).name
        return first.index(name) if name in first else len(first)

    items.sort(key=rank)
