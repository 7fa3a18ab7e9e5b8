"""The README's quickstart stays true: it names every Debian package `.ci/run` installs before `make test`."""

from __future__ import annotations

import re
import shlex

from support import PROJECT_ROOT

APT_INSTALL = re.compile(r"apt-get install (.*?)(?:>|#|$)")


def apt_packages(text: str) -> set[str]:
    """The packages of every `apt-get install` line of a shell text (its options left out)."""
    return {word for line in text.splitlines() for match in APT_INSTALL.finditer(line)
            for word in shlex.split(match.group(1)) if not word.startswith("-")}


def test_the_readme_installs_the_debian_packages_ci_installs():
    readme = apt_packages((PROJECT_ROOT / "README.md").read_text())
    ci = apt_packages((PROJECT_ROOT / ".ci" / "run").read_text())
    assert {"dataset-fashion-mnist", "postgresql", "nginx", "qemu-user"} <= ci  # what the tests need, read right
    assert readme == ci
