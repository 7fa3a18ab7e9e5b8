"""The library's imports go one way, down its layers, and the stage commands stay apart from the CI tools:
read from the source of every module, so an upward import fails here before it couples two concerns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
LIBRARY = "softmax_regression"
LAYERS = (
    ("foundation", ("softmax_regression", "softmax_regression.errors", "softmax_regression.atomic",
                    "softmax_regression.checksums", "softmax_regression.filetypes")),
    ("choices", ("softmax_regression.data", "softmax_regression.models", "softmax_regression.training",
                 "softmax_regression.evaluation", "softmax_regression.reporting", "softmax_regression.tracking",
                 "softmax_regression.predicting", "softmax_regression.tuning")),
    ("params", ("softmax_regression.params",)),
    ("data", ("softmax_regression.data.",)),
    ("models", ("softmax_regression.models.",)),
    ("evaluation", ("softmax_regression.evaluation.",)),
    ("training", ("softmax_regression.training.",)),
    ("reporting", ("softmax_regression.reporting.",)),
    ("tracking", ("softmax_regression.tracking.",)),
    ("predicting", ("softmax_regression.predicting.",)),
    ("tuning", ("softmax_regression.tuning.",)),
)
"""Bottom first. A package's ``__init__`` holds its choice lists (no torch: the params check reads them), so
it sits below params; the package's modules sit above."""


def module_name(path: Path, base: Path) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        if any(module == m or (m.endswith(".") and module.startswith(m)) for m in members):
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS: add it where it belongs")


def imports(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports (absolute, relative, inside functions), as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def project_module(name: str, root: Path, top: str) -> str | None:
    """``name`` if it is a module or package of ``top`` under ``root``, else None (a class, a function)."""
    if name.split(".")[0] != top:
        return None
    path = root.joinpath(*name.split("."))
    return name if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() else None


LIBRARY_FILES = sorted((SRC / LIBRARY).rglob("*.py"))


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_the_library_imports_only_downward(path):
    module = module_name(path, SRC)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    upward = sorted(f"{target} ({LAYERS[layer(target)][0]})"
                    for target in filter(None, (project_module(n, SRC, LIBRARY) for n in imports(path, package)))
                    if layer(target) > layer(module))
    assert not upward, f"{module} ({LAYERS[layer(module)][0]}) imports upward: {', '.join(upward)}"
    assert not any(n.split(".")[0] == "pipeline" for n in imports(path, package)), \
        f"{module} imports the pipeline: the library knows nothing of DVC or the stages"


def test_the_choice_lists_import_nothing_heavy():
    """Every package's ``__init__`` is read by the params check of every stage, fetch included."""
    for path in (SRC / LIBRARY).glob("*/__init__.py"):
        heavy = {n for n in imports(path, module_name(path, SRC)) if n.split(".")[0] in ("torch", "mlflow", "sklearn",
                                                                                      "pandas", "matplotlib")}
        assert not heavy, f"{path.relative_to(SRC)} imports {', '.join(sorted(heavy))}"
        assert not any(project_module(n, SRC, LIBRARY) for n in imports(path, module_name(path, SRC))), path


def test_stage_commands_do_not_import_the_ci_tools():
    """pipeline/ci/ (lock_check, reproduce_check, tolerance, pr_report, check_params) runs beside the stages,
    never inside one: an edit there reruns no stage."""
    for path in sorted((PROJECT_ROOT / "pipeline").glob("*.py")):
        ci = sorted(n for n in imports(path, "pipeline") if n.startswith("pipeline.ci"))
        assert not ci, f"{path.relative_to(PROJECT_ROOT)} imports {', '.join(ci)}"


def test_the_layers_name_every_package():
    packages = {p.parent.name for p in (SRC / LIBRARY).glob("*/__init__.py")}
    named = {m.split(".")[1] for _, members in LAYERS for m in members if m.count(".") >= 1}
    assert packages <= named, packages - named
