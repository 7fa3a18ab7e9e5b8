"""Choosing a tuned model on the validation split only.

A sweep is a grid over the knobs that shape a model (``train.*`` and
``data.normalize``) plus fixed values. Each grid point runs as one pipeline
experiment; its scratch model's training run in MLflow carries the params it
was trained with and ``val_acc``, the accuracy on the validation split after
its last epoch. The winner is the point with the best ``val_acc``; on a tie,
the first in grid order.

This module reads only that one metric of the training runs. It never opens
a data file and never asks MLflow for a test metric, though evaluate logs
``test_accuracy`` into the same runs (the tests hold it to that).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import one_line
from .params import ParamsError, validate_params

SELECTED_MODEL = "scratch"
"""The training runs compared: the chapter's own model (concise trains to the same weights)."""
SELECTION_METRIC = "val_acc"
"""Validation accuracy after the last epoch, logged by the train stage."""
TUNABLE_PREFIXES = ("train.", "data.normalize")
"""Grid keys a training run records among its params, so that its run can be found by them."""


class SweepError(ValueError):
    """A sweep file that cannot be run, or a sweep whose runs cannot be found."""


@dataclass(frozen=True)
class Candidate:
    point: dict[str, Any]
    """The grid point: dotted param keys and values."""
    val_acc: float
    run_id: str


def _read_yaml(path: Path, what: str, when_missing: str = "") -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{what} {path} not found{when_missing}") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"{what} {path} is not valid YAML: {one_line(exc)}") from None


def _dotted(values: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(values, dict) or not all(isinstance(k, str) and "." in k for k in values):
        raise SweepError(f"{where} must map dotted params keys (train.lr) to values")
    return dict(values)


def load_sweep(path: str | Path, base_params: dict | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The fixed values and the grid points of a sweep file, each point checked as params.

    The file holds ``fixed`` (dotted key: value) and ``grid`` (dotted key: list of values);
    every point is ``fixed`` plus one combination of the grid, in the file's order.
    """
    path = Path(path)
    raw = _read_yaml(path, "sweep file")
    if not isinstance(raw, dict) or set(raw) - {"fixed", "grid"} or "grid" not in raw:
        raise SweepError(f"sweep file {path} must hold a `grid` mapping and optionally `fixed`")
    fixed = _dotted(raw.get("fixed") or {}, f"{path}: fixed")
    grid = _dotted(raw["grid"], f"{path}: grid")
    for key, values in grid.items():
        if not key.startswith(TUNABLE_PREFIXES):
            raise SweepError(f"{path}: grid key {key} is not one a training run records "
                             f"(train.* or data.normalize); put it under fixed")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid key {key} must list at least one value")
    points = [{**fixed, **dict(zip(grid, combination))} for combination in itertools.product(*grid.values())]
    for point in points:
        check_point(point, base_params or {}, str(path))
    return fixed, points


def check_point(point: dict[str, Any], base_params: dict, where: str) -> None:
    """Validate ``base_params`` with ``point`` set, as a stage would: one line naming the bad key."""
    merged = {section: dict(values or {}) for section, values in base_params.items()}
    for dotted, value in point.items():
        section, _, key = dotted.partition(".")
        merged.setdefault(section, {})[key] = value
    try:
        validate_params(merged)
    except ParamsError as exc:
        raise SweepError(f"{where}: {exc}") from None


def _same_value(logged: str, wanted: Any) -> bool:
    """An MLflow param (a string) against a params value: compared as YAML reads it (``0`` == ``0.0``)."""
    try:
        value = yaml.safe_load(logged)
    except yaml.YAMLError:
        return False
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted
    if isinstance(wanted, (int, float)) and isinstance(value, (int, float)):
        return float(value) == float(wanted)
    return value == wanted


def candidates_from_runs(client, experiment_id: str, points: list[dict[str, Any]]) -> list[Candidate]:
    """For each grid point, the latest finished training run of :data:`SELECTED_MODEL` with exactly its
    tunable params, and that run's final validation accuracy; raises SweepError naming a point without one.

    Only :data:`SELECTION_METRIC`'s history is fetched, by name.
    """
    runs = client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{SELECTED_MODEL}' "
                              "and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                              max_results=5000)
    found = []
    for point in points:
        tunable = {k: v for k, v in point.items() if k.startswith(TUNABLE_PREFIXES)}
        match = next((r for r in runs if all(k in r.data.params and _same_value(r.data.params[k], v)
                                             for k, v in tunable.items())), None)
        if match is None:
            raise SweepError(f"no finished {SELECTED_MODEL} run in MLflow for {format_point(tunable)}")
        history = client.get_metric_history(match.info.run_id, SELECTION_METRIC)
        if not history:
            raise SweepError(f"run {match.info.run_id} has no {SELECTION_METRIC}")
        last = max(history, key=lambda m: m.step)
        found.append(Candidate(point, float(last.value), match.info.run_id))
    return found


def best(candidates: list[Candidate]) -> Candidate:
    """The best validation accuracy; the first in grid order among equals."""
    if not candidates:
        raise SweepError("no candidates to choose from")
    return max(candidates, key=lambda c: c.val_acc)  # max keeps the first of equal keys


def format_point(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def tuned_yaml(winner: Candidate, candidates: list[Candidate], sweep_path: str, how_to_reproduce: str) -> str:
    """The tuned params file: the winner's params (dotted keys), with how it was chosen and how to
    reproduce it as comments."""
    runners_up = sorted(candidates, key=lambda c: -c.val_acc)[1:4]
    lines = [
        "# The tuned model: the point of the sweep with the best validation accuracy",
        f"# (chosen from {sweep_path}; the test split was not looked at).",
        f"# {how_to_reproduce}",
        f"# validation accuracy of its {SELECTED_MODEL} model: {winner.val_acc:.4f} "
        f"(best of {len(candidates)}; next: " + ", ".join(f"{c.val_acc:.4f}" for c in runners_up) + ")",
    ]
    return "\n".join(lines) + "\n" + yaml.safe_dump(winner.point, sort_keys=False, default_flow_style=False)


def load_tuned(path: str | Path, when_missing: str = "") -> dict[str, Any]:
    """The params a tuned file sets (dotted keys)."""
    path = Path(path)
    return _dotted(_read_yaml(path, "tuned params file", when_missing), f"tuned params file {path}")
