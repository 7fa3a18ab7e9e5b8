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

from softmax_regression.errors import one_line
from softmax_regression.params import (
    OMITTED_AT_DEFAULT,
    SHAPING,
    ParamsError,
    flatten_params,
    parse_params_yaml,
    validate_params,
)
from softmax_regression.tracking.runs import DATASET_SHA256_TAG

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
    """A sweep or tuned file, read as params.yaml is (no anchors or aliases, no duplicate keys)."""
    try:
        return parse_params_yaml(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{what} {path} not found{when_missing}") from None
    except ParamsError as exc:
        raise SweepError(f"{what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"{what} {path} is not valid YAML: {one_line(exc)}") from None


def _dotted(values: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(values, dict) or not all(isinstance(k, str) and "." in k for k in values):
        raise SweepError(f"{where} must map dotted params keys (train.lr) to values")
    return dict(values)


def load_sweep(path: str | Path, base_params: dict) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
        check_point(point, base_params, str(path))
    return fixed, points


def point_params(point: dict[str, Any], base_params: dict, where: str = "sweep") -> dict[str, dict[str, Any]]:
    """``base_params`` (the project's params.yaml) with ``point`` set, validated as a stage would: one line
    naming the bad key."""
    merged = {section: dict(values or {}) for section, values in base_params.items()}
    for dotted, value in point.items():
        section, _, key = dotted.partition(".")
        merged.setdefault(section, {})[key] = value
    try:
        return validate_params(merged)
    except ParamsError as exc:
        raise SweepError(f"{where}: {exc}") from None


def check_point(point: dict[str, Any], base_params: dict, where: str) -> None:
    """A point the pipeline can run and the selection can judge on validation data alone."""
    if point_params(point, base_params, where)["data"]["val_size"] == 0:
        raise SweepError(f"{where}: data.val_size is 0, so the test split would be the validation split and "
                         "choose the winner; set data.val_size (params.yaml's value) to tune")


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


def shaping_params(point: dict[str, Any], base_params: dict) -> dict[str, Any]:
    """Every param that shapes the model a point trains (:data:`~softmax_regression.params.SHAPING`): the
    point's own values, the rest from ``base_params`` (the project's params.yaml)."""
    flat = flatten_params(point_params(point, base_params))
    return {key: flat[key] for key in SHAPING}


def _tunable(point: dict[str, Any]) -> dict[str, Any]:
    """The point's values a training run records (what a missing run is named by)."""
    return {k: v for k, v in point.items() if k.startswith(TUNABLE_PREFIXES)}


def _trained(run_params: dict[str, str], wanted: dict[str, Any]) -> bool:
    """Whether a run's logged params are ``wanted``; a run created from a model file records a param of
    :data:`~softmax_regression.params.OMITTED_AT_DEFAULT` only where it is not the default."""
    for key, value in wanted.items():
        if key not in run_params:
            if OMITTED_AT_DEFAULT.get(key, object()) != value:
                return False
        elif not _same_value(run_params[key], value):
            return False
    return True


def candidates_from_runs(client, experiment_id: str, points: list[dict[str, Any]], base_params: dict,
                         dataset_sha256: str | None = None) -> list[Candidate]:
    """For each grid point, the latest finished training run of :data:`SELECTED_MODEL` with exactly the
    params that shape its model (:func:`shaping_params`: the point's, the rest from ``base_params``), and
    that run's final validation accuracy; raises SweepError naming a point without one.

    All candidates come from one dataset (the runs' ``dataset_sha256`` tag), so their validation
    accuracies are measured on one validation split: ``dataset_sha256`` where given, else the dataset of
    the most recent matching run among those on which every point has a run. A run that matched only the
    point's own keys could have trained for another number of epochs, or on other data.

    Only :data:`SELECTION_METRIC`'s history is fetched, by name.
    """
    runs = client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{SELECTED_MODEL}' "
                              "and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                              max_results=5000)
    wanted = [shaping_params(point, base_params) for point in points]
    matches = [[r for r in runs if _trained(r.data.params, shaping)] for shaping in wanted]
    for point, found in zip(points, matches):
        if not found:
            raise SweepError(f"no finished {SELECTED_MODEL} run in MLflow for {format_point(_tunable(point))}")
    if dataset_sha256 is None:
        matched = {r.info.run_id for found in matches for r in found}
        newest_first = [r.data.tags.get(DATASET_SHA256_TAG) for r in runs if r.info.run_id in matched]
        complete = [d for d in dict.fromkeys(newest_first)
                    if all(any(r.data.tags.get(DATASET_SHA256_TAG) == d for r in found) for found in matches)]
        if not complete:
            raise SweepError("no one dataset has a finished run of every point of the sweep (the runs' "
                             f"{DATASET_SHA256_TAG} differ): run the sweep again")
        dataset_sha256 = complete[0]
    chosen = []
    for point, found in zip(points, matches):
        match = next((r for r in found if r.data.tags.get(DATASET_SHA256_TAG) == dataset_sha256), None)
        if match is None:
            raise SweepError(f"no finished {SELECTED_MODEL} run in MLflow on the dataset {str(dataset_sha256)[:12]}... "
                             f"for {format_point(_tunable(point))}")
        history = client.get_metric_history(match.info.run_id, SELECTION_METRIC)
        if not history:
            raise SweepError(f"run {match.info.run_id} has no {SELECTION_METRIC}")
        last = max(history, key=lambda m: m.step)
        chosen.append(Candidate(point, float(last.value), match.info.run_id))
    return chosen


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
