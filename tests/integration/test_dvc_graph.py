"""dvc.yaml lists exactly what each stage imports from the project and reads from params.yaml, and
nothing in DVC's graph names an MLflow run, a time, a host or an absolute path."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import PROJECT_ROOT, clean_env

STAGE_COMMAND = re.compile(r"^python -m pipeline (\w+)\b")
LAUNCHER = "pipeline.__main__"
"""What every stage command runs first: it imports the stage's module by name (importlib)."""
PROJECT_PACKAGES = ("pipeline", "softmax_regression")
CODE_DIRS = (PROJECT_ROOT / "pipeline", PROJECT_ROOT / "src" / "softmax_regression")


def stages() -> dict[str, dict]:
    return yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    return f"pipeline.{STAGE_COMMAND.match(stage['cmd']).group(1)}"


def is_project_file(path: str | Path | None) -> bool:
    return path is not None and any(Path(path).resolve().is_relative_to(d) for d in CODE_DIRS)


def relative(path: str | Path) -> str:
    return Path(path).resolve().relative_to(PROJECT_ROOT).as_posix()


def module_file(name: str) -> Path | None:
    """The project file of module ``name``, or None (not a module of the project, or not a module at all)."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and is_project_file(spec.origin) else None


def static_imports(module: str) -> set[str]:
    """Every project file ``module`` may import, at any depth, read from the source: imports inside
    functions (made late, to start faster) count as much as those at the top."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages' __init__.py
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                    if node.level else node.module
                todo.append(base)
                todo += [f"{base}.{alias.name}" for alias in node.names]  # `from . import paths`
    return {relative(p) for p in seen}


IMPORTED = """
import gc, importlib, json, sys
gc.disable()  # as the launcher imports a stage: the collector would add a second of CPU to each process
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})))
"""


@pytest.fixture(scope="module")
def runtime_imports() -> dict[str, set[str]]:
    """What importing the launcher and each stage's module really loads from the project, each stage in
    a fresh interpreter (started together: importing torch and mlflow takes seconds)."""
    modules = sorted({stage_module(s) for s in stages().values()})
    env = clean_env(PYTHONPATH=str(PROJECT_ROOT / "src"))
    processes = {m: subprocess.Popen([sys.executable, "-c", IMPORTED, LAUNCHER, m], cwd=PROJECT_ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m in modules}
    found = {}
    for module, process in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        found[module] = {relative(f) for f in json.loads(out) if is_project_file(f)}
    return found


def declared_code(stage: dict) -> set[str]:
    return {d for d in stage.get("deps", []) if d.endswith(".py")}


@pytest.mark.parametrize("name", list(stages()))
def test_deps_are_exactly_the_project_modules_the_stage_imports(name, runtime_imports):
    stage = stages()[name]
    module = stage_module(stage)
    static = static_imports(LAUNCHER) | static_imports(module)
    imported = static | runtime_imports[module]
    assert runtime_imports[module] <= static, "the source reading misses an import"
    declared = declared_code(stage)
    missing, extra = sorted(imported - declared), sorted(declared - imported)
    assert not missing, f"stage {name} imports {', '.join(missing)} but dvc.yaml does not list it"
    assert not extra, f"stage {name} lists {', '.join(extra)} in dvc.yaml but never imports it"


def test_the_import_reading_sees_late_and_relative_imports():
    """The source reading follows package ``__init__`` files, absolute and relative imports, and imports
    inside functions."""
    imported = static_imports("pipeline.evaluate")
    assert {"pipeline/__init__.py", "pipeline/paths.py", "pipeline/_cli.py", "pipeline/stage_runs.py", "src/softmax_regression/__init__.py", "src/softmax_regression/models/__init__.py",
            "src/softmax_regression/models/scratch.py", "src/softmax_regression/checksums.py"} <= imported
    assert "src/softmax_regression/predicting/cli.py" not in imported
    # fmnist-predict imports the registry inside its command, only for a models:/ URI: followed all the same
    assert "src/softmax_regression/tracking/registry.py" in static_imports("softmax_regression.predicting.cli")


def params_module(module: str) -> str:
    """The module that assigns the stage module's ``PARAMS``: the stage module itself, or the module it
    imports them from (the two chapter train stages share theirs), read from the source."""
    for node in ast.parse(module_file(module).read_text()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["PARAMS"]:
            return module
        if isinstance(node, ast.ImportFrom) and "PARAMS" in [alias.name for alias in node.names]:
            return params_module(node.module)
    raise AssertionError(f"{relative(module_file(module))} declares no PARAMS")


def declared_params_in_code(module: str) -> list[str]:
    """The stage module's ``PARAMS``: what it asks ``load_stage_params`` for, read from its source."""
    for node in ast.parse(module_file(params_module(module)).read_text()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["PARAMS"]:
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{module} declares no PARAMS")


@pytest.mark.parametrize("name", list(stages()))
def test_params_are_exactly_those_the_stage_reads(name):
    stage = stages()[name]
    in_code = declared_params_in_code(stage_module(stage))
    in_dvc = stage.get("params", [])
    assert sorted(in_code) == sorted(in_dvc), f"stage {name}: code reads {in_code}, dvc.yaml declares {in_dvc}"
    source = module_file(params_module(stage_module(stage))).read_text()
    assert "load_params(" not in source
    assert ("load_stage_params(params_path, PARAMS)" in source
            or "load_stage_params(params_path, PARAMS, settings=SETTINGS)" in source)


def test_only_fetch_reads_untracked_settings_and_a_setting_cannot_be_a_tracked_param():
    """params.SETTINGS (where the data comes from) is read by fetch alone, outside DVC's params; a
    stage cannot slip a param that shapes outputs in as a setting."""
    from pipeline._cli import load_stage_params
    from softmax_regression.params import SETTINGS

    readers = [name for name, stage in stages().items()
               if "settings=SETTINGS" in module_file(stage_module(stage)).read_text()]
    assert readers == ["fetch"]
    assert not any(key in SETTINGS or key == "data" for stage in stages().values() for key in stage.get("params", []))
    view = load_stage_params(str(PROJECT_ROOT / "params.yaml"), (), settings=SETTINGS)
    assert view["data"]["system_dir"] == "/usr/share/datasets/fashion-mnist"
    with pytest.raises(KeyError):
        view["data"]["seed"]
    with pytest.raises(ValueError, match="data.seed shape outputs: declare them as PARAMS, not settings"):
        load_stage_params(str(PROJECT_ROOT / "params.yaml"), (), settings=("data.seed",))


def test_a_stage_cannot_read_a_param_it_does_not_declare(tmp_path):
    from pipeline._cli import load_stage_params

    params = load_stage_params(str(PROJECT_ROOT / "params.yaml"), ("train", "tracking.experiment"))
    assert set(params) == {"train", "tracking"}
    assert params["train"]["lr"] == 0.1 and params["tracking"]["experiment"] == "fashion-mnist-softmax"
    with pytest.raises(KeyError, match="tracking.registered_model is not among this stage's declared params"):
        params["tracking"]["registered_model"]
    with pytest.raises(KeyError):
        params["data"]


def test_the_graph_holds_no_run_id_time_host_or_absolute_path():
    spec = stages()
    paths = [entry if isinstance(entry, str) else next(iter(entry))
             for stage in spec.values() for kind in ("deps", "outs", "metrics", "plots")
             for entry in stage.get(kind, [])]
    assert not [p for p in paths if p.startswith("/") or re.search(r"_run\b|run_id", p)]
    lock_text = (PROJECT_ROOT / "dvc.lock").read_text()
    lock = yaml.safe_load(lock_text)
    assert set(lock["stages"]) == set(spec)
    for stage in lock["stages"].values():
        for entry in stage.get("deps", []) + stage.get("outs", []):
            assert not entry["path"].startswith("/") and not re.search(r"_run\b|run_id", entry["path"]), entry
    for text in (str(PROJECT_ROOT), "run_id", "mlflow.db", "sqlite:"):
        assert text not in lock_text, text


def stage_outputs(stage: dict) -> set[str]:
    return {entry if isinstance(entry, str) else next(iter(entry))
            for kind in ("outs", "metrics", "plots") for entry in stage.get(kind, [])}


def test_the_report_depends_on_everything_evaluate_writes():
    """The report reads every output of evaluate (metrics, per-class table, predictions, heatmaps): a change
    to any of them must rerun it, so each is a dep."""
    spec = stages()
    missing = stage_outputs(spec["evaluate"]) - set(spec["report"]["deps"])
    assert not missing, f"report reads {sorted(missing)} but dvc.yaml does not list them as its deps"
