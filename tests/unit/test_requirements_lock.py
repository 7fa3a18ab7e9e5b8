"""requirements.lock pins the whole stack: every pin of pyproject.toml at its version, every other package the
stack pulls in at one version, and this environment (what `make install` made) is exactly what it pins."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support import PROJECT_ROOT


def locked() -> dict[str, Requirement]:
    """The lock's entries by canonical name (comments and blank lines left out)."""
    lines = (line.split("#", 1)[0].strip() for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines())
    entries = [Requirement(line) for line in lines if line]
    by_name = {canonicalize_name(entry.name): entry for entry in entries}
    assert len(by_name) == len(entries), "a package is pinned twice"
    return by_name


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not pinned to one version"
    return specifier.version


def test_every_package_is_pinned_to_one_version():
    entries = locked()
    assert len(entries) > 150  # torch, MLflow and DVC pull in about 200
    for entry in entries.values():
        pinned_version(entry)
        assert not entry.url and not entry.extras, entry


def test_the_lock_holds_every_pin_of_pyproject_at_its_version():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    entries = locked()
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is not in requirements.lock: run `make requirements`"
        assert pinned_version(entries[name]) == pinned_version(requirement), (
            f"pyproject.toml pins {requirement}, requirements.lock {entries[name]}: run `make requirements`")


def test_this_environment_is_the_locked_one():
    """Each package the lock pins for this platform is installed at its pinned version."""
    wrong = {}
    for name, entry in locked().items():
        if entry.marker is not None and not entry.marker.evaluate():
            continue  # another platform's (pywin32, say)
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned_version(entry):
            wrong[name] = (installed, pinned_version(entry))
    assert not wrong, f"installed, locked: {wrong}"
