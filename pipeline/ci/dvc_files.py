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


def read_text(path: Path) -> str:
    """The text of a pipeline file; one that cannot be read is a :class:`CheckError` naming it."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckError(f"{path} cannot be read: {one_line(exc)}") from None


def read_stages(path: Path) -> dict:
    """The ``stages`` mapping of the dvc.yaml or dvc.lock at ``path``."""
    return parse_stages(read_text(path), str(path))


def parse_lock(text: str, where: str) -> dict:
    """The stages of a dvc.lock text, each dep and out checked to be a mapping with a string ``path`` (what DVC
    writes): a hand-edited or damaged entry is a :class:`CheckError` naming the file and the stage."""
    stages = parse_stages(text, where)
    for name, body in stages.items():
        for kind in ("deps", "outs"):
            entries = body.get(kind) or []
            if not isinstance(entries, list) or not all(isinstance(entry, dict) and isinstance(entry.get("path"), str)
                                                        for entry in entries):
                raise CheckError(f"{where}: the {kind} of stage {name} are not a list of entries each with a path")
    return stages


def read_lock(path: Path) -> dict:
    """The stages of the dvc.lock at ``path`` (:func:`parse_lock`)."""
    return parse_lock(read_text(path), str(path))


def declared_outs(stage: dict) -> set[str]:
    """The paths a dvc.yaml stage declares as outs, metrics or plots (each a path, or ``{path: options}``)."""
    return {next(iter(entry)) if isinstance(entry, dict) else str(entry)
            for kind in ("outs", "metrics", "plots") for entry in stage.get(kind) or []}


def unlocked(defined: dict, locked: dict) -> list[str]:
    """What of dvc.yaml's ``defined`` stages the ``locked`` ones of a dvc.lock do not record, or record beyond
    them: whole stages, and the outs of a stage (a dvc.yaml that gained an out its dvc.lock lacks)."""
    gaps = [f"stage {name} is not in dvc.lock" for name in sorted(set(defined) - set(locked))]
    gaps += [f"stage {name} is in dvc.lock but not in dvc.yaml" for name in sorted(set(locked) - set(defined))]
    for name in sorted(set(defined) & set(locked)):
        declared, recorded = declared_outs(defined[name]), {out["path"] for out in locked[name].get("outs") or []}
        gaps += [f"{path} is an out of stage {name} in dvc.yaml but not in dvc.lock"
                 for path in sorted(declared - recorded)]
        gaps += [f"{path} is an out of stage {name} in dvc.lock but not in dvc.yaml"
                 for path in sorted(recorded - declared)]
    return gaps
