"""dvc.yaml and dvc.lock read as their stages, for the CI checks.

A file that is no mapping of stages (a merge left its conflict markers, say) is
a :class:`CheckError` naming it: the check could not run, which each check
reports in one line with its own exit code, not a YAML traceback.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from softmax_regression.errors import one_line


class CheckError(RuntimeError):
    """A check could not be carried out (as opposed to: it ran and found something to report)."""


def parse_stages(text: str, where: str) -> dict:
    """The ``stages`` mapping of a dvc.yaml or dvc.lock text (empty for an empty file); ``where`` names the
    file in the error."""
    try:
        spec = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CheckError(f"{where} cannot be read as YAML: {one_line(exc)}") from None
    stages = spec.get("stages") or {} if isinstance(spec, dict) else None
    if not isinstance(stages, dict) or not all(isinstance(body, dict) for body in stages.values()):
        raise CheckError(f"{where} holds no mapping of stages")
    return stages


def read_stages(path: Path) -> dict:
    """The ``stages`` mapping of the dvc.yaml or dvc.lock at ``path``."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckError(f"{path} cannot be read: {one_line(exc)}") from None
    return parse_stages(text, str(path))
