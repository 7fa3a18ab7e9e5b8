"""The search file (``params/search.yaml``): the study's name and size, its sampler and pruner, the values
every trial shares and the space its trials draw from; and the tuned file the winner's params go to.

Every key of the space is a params key that shapes the scratch model (``train.*`` or ``data.normalize``), so
that a trial is one point of ``params.yaml``, which the train stage can train again. A point is checked as a
stage checks params.yaml; a bad file is one line naming the key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from softmax_regression.errors import one_line
from softmax_regression.params import SCHEMA, SETTINGS, ParamsError, parse_params_yaml, validate_params
from softmax_regression.tuning import PRUNERS, SAMPLERS

TUNABLE_PREFIXES = ("train.", "data.normalize")
"""Keys a trial may vary: what shapes the model a train stage writes from the processed splits."""
KEYS = {"study", "experiment", "trials", "sampler", "seed", "pruner", "fixed", "space"}
OPTIONAL = {"heartbeat": 5}
"""Keys a search file may leave out, with their defaults."""
MAX_SEED = 2**32 - 1


class SearchError(ValueError):
    """A search or tuned file that cannot be run, or a study that does not fit it."""


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False
    """The params key takes whole numbers only (``train.epochs``): drawn with ``suggest_int``; else floats, however
    the bounds are written (``{low: 0, high: 1}`` of ``train.weight_decay`` draws from the interval)."""


@dataclass(frozen=True)
class Choices:
    values: tuple


@dataclass(frozen=True)
class Search:
    study: str
    experiment: str
    """The MLflow experiment of the study's runs."""
    trials: int
    """Finished trials (complete or pruned) the study ends with."""
    sampler: str
    seed: int
    pruner: str
    fixed: dict[str, Any]
    space: dict[str, Range | Choices]
    digest: str
    """Of everything above but the number of trials, and of what the trials take from params.yaml
    (:func:`trial_base`): a study holds the trials of one search on one base only."""
    heartbeat: float = OPTIONAL["heartbeat"]
    """Seconds between a running trial's heartbeats; a trial silent for four of them is taken for dead."""

    def grid(self) -> dict[str, list]:
        """The space as Optuna's ``GridSampler`` takes it (every key a list of choices)."""
        return {key: list(spec.values) for key, spec in self.space.items()}


def _read_yaml(path: Path, what: str, when_missing: str = "") -> Any:
    """A search or tuned file, read as params.yaml is (no anchors or aliases, no duplicate keys)."""
    try:
        return parse_params_yaml(path.read_text())
    except FileNotFoundError:
        raise SearchError(f"{what} {path} not found{when_missing}") from None
    except ParamsError as exc:
        raise SearchError(f"{what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SearchError(f"{what} {path} is not valid YAML: {one_line(exc)}") from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _takes_only_integers(key: str) -> bool:
    """The params key's rule refuses a float with a whole value (``train.epochs``), but not an integer."""
    section, _, name = key.partition(".")
    rule = SCHEMA.get(section, {}).get(name)
    return rule is not None and rule.check(1) and not rule.check(1.0)


def _spec(key: str, raw: Any, where: str) -> Range | Choices:
    if isinstance(raw, dict) and set(raw) == {"choices"}:
        values = raw["choices"]
        if not isinstance(values, list) or not values or len(set(map(repr, values))) < len(values):
            raise SearchError(f"{where}: space.{key}.choices must list distinct values")
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
            raise SearchError(f"{where}: space.{key}.choices must be numbers, strings, booleans or null")
        return Choices(tuple(values))
    if not isinstance(raw, dict) or not {"low", "high"} <= set(raw) <= {"low", "high", "log", "step"}:
        raise SearchError(f"{where}: space.{key} must be {{choices: [...]}} or {{low: ..., high: ...}} "
                          "with optional log: true or step")
    low, high, log, step = raw["low"], raw["high"], raw.get("log", False), raw.get("step")
    if not (_number(low) and _number(high) and low < high):
        raise SearchError(f"{where}: space.{key} needs numbers low < high (got {low!r}, {high!r})")
    if not isinstance(log, bool) or (log and low <= 0):
        raise SearchError(f"{where}: space.{key}.log must be true or false, and true only for low > 0")
    if step is not None and (not _number(step) or step <= 0 or log):
        raise SearchError(f"{where}: space.{key}.step must be a positive number, and not with log")
    integer = _takes_only_integers(key)
    if integer and not all(isinstance(v, int) for v in (low, high, 1 if step is None else step)):
        raise SearchError(f"{where}: {key} takes whole numbers: space.{key}'s low, high and step must be integers")
    return Range(low, high, log, step, integer)


def _endpoints(spec: Range | Choices) -> list:
    return list(spec.values) if isinstance(spec, Choices) else [spec.low, spec.high]


def trial_base(base_params: dict, searched: set[str]) -> dict[str, Any]:
    """What a trial takes from params.yaml (dotted keys): the ``train`` keys and the ``data`` keys the processed
    splits and the inputs are made by, but those the search sets (``searched``) and fetch's settings, which
    change no byte."""
    params = validate_params(base_params)
    return {f"{section}.{key}": value for section in ("train", "data") for key, value in params[section].items()
            if f"{section}.{key}" not in searched | set(SETTINGS)}


def point_params(point: dict[str, Any], base_params: dict, where: str = "search") -> dict[str, dict[str, Any]]:
    """``base_params`` (the project's params.yaml) with ``point`` (dotted keys) set, validated as a stage would:
    one line naming the bad key."""
    merged = {section: dict(values or {}) for section, values in base_params.items()}
    for dotted, value in point.items():
        section, _, key = dotted.partition(".")
        merged.setdefault(section, {})[key] = value
    try:
        return validate_params(merged)
    except ParamsError as exc:
        raise SearchError(f"{where}: {exc}") from None


def load_search(path: str | Path, base_params: dict) -> Search:
    """The search file at ``path``, each of its values checked against ``base_params`` (params.yaml)."""
    path = Path(path)
    where = f"search file {path}"
    raw = _read_yaml(path, "search file")
    if not isinstance(raw, dict) or not KEYS <= set(raw) <= KEYS | set(OPTIONAL):
        found = set(map(str, raw)) if isinstance(raw, dict) else set()
        wrong = sorted(KEYS - found) or sorted(found - KEYS - set(OPTIONAL))
        raise SearchError(f"{where} must hold {', '.join(sorted(KEYS))} and may hold {', '.join(sorted(OPTIONAL))}, "
                          f"nothing else (look at {', '.join(wrong) or 'its top level'})")
    for key in ("study", "experiment"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise SearchError(f"{where}: {key} must be a non-empty name")
    if not isinstance(raw["trials"], int) or isinstance(raw["trials"], bool) or raw["trials"] < 1:
        raise SearchError(f"{where}: trials must be a whole number of at least 1")
    if not isinstance(raw["seed"], int) or isinstance(raw["seed"], bool) or not 0 <= raw["seed"] <= MAX_SEED:
        raise SearchError(f"{where}: seed must be a whole number between 0 and {MAX_SEED} (numpy's seed range, "
                          "which Optuna's samplers take)")
    heartbeat = raw.get("heartbeat", OPTIONAL["heartbeat"])
    if not isinstance(heartbeat, (int, float)) or isinstance(heartbeat, bool) or not 0 < heartbeat <= 3600:
        raise SearchError(f"{where}: heartbeat must be a number of seconds above 0 and at most 3600")
    for key, allowed in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if raw[key] not in allowed:
            raise SearchError(f"{where}: {key} must be one of {', '.join(allowed)}, not {raw[key]!r}")
    fixed, space = raw["fixed"] or {}, raw["space"]
    for section, value in (("fixed", fixed), ("space", space)):
        if not isinstance(value, dict) or not all(isinstance(k, str) and "." in k for k in value):
            raise SearchError(f"{where}: {section} must map dotted params keys (train.lr) to values")
    if not space:
        raise SearchError(f"{where}: space names no key to search")
    for section, key in [("fixed", key) for key in fixed] + [("space", key) for key in space]:
        if not key.startswith(TUNABLE_PREFIXES):  # a trial trains on the processed splits: data.* is preprocess's
            raise SearchError(f"{where}: {section}.{key} is not a key that shapes the model (train.* or "
                              "data.normalize)")
    specs = {}
    for key, raw_spec in space.items():
        if key in fixed:
            raise SearchError(f"{where}: {key} is both fixed and in the space")
        specs[key] = _spec(key, raw_spec, where)
    point_params(fixed, base_params, f"{where}: fixed")
    for key, spec in specs.items():
        for value in _endpoints(spec):
            point_params({**fixed, key: value}, base_params, f"{where}: space.{key} = {value!r}")
    if point_params(fixed, base_params)["data"]["val_size"] == 0:
        raise SearchError(f"{where}: data.val_size is 0, so the test split would be the validation split and "
                          "choose the winner; set data.val_size in params.yaml to tune")
    if raw["sampler"] == "grid":
        ranges = [key for key, spec in specs.items() if isinstance(spec, Range)]
        if ranges:
            raise SearchError(f"{where}: the grid sampler needs choices, and space.{ranges[0]} is a range")
        size = math.prod(len(spec.values) for spec in specs.values())
        if raw["trials"] > size:
            raise SearchError(f"{where}: trials is {raw['trials']}, but the grid has {size} points")
    described = {k: raw[k] for k in sorted(KEYS - {"trials"})}
    described["params"] = trial_base(base_params, set(fixed) | set(specs))
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    return Search(raw["study"], raw["experiment"], raw["trials"], raw["sampler"], raw["seed"], raw["pruner"],
                  dict(fixed), specs, digest, heartbeat)


def suggest(trial, search: Search) -> dict[str, Any]:
    """The trial's point (dotted keys): the fixed values and one draw from each key of the space."""
    point = dict(search.fixed)
    for key, spec in search.space.items():
        if isinstance(spec, Choices):
            point[key] = trial.suggest_categorical(key, list(spec.values))
        elif spec.integer:
            point[key] = trial.suggest_int(key, spec.low, spec.high, step=spec.step or 1, log=spec.log)
        else:
            point[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return point


@dataclass(frozen=True)
class Scored:
    point: dict[str, Any]
    val_acc: float
    trial: int


def tuned_yaml(winner: Scored, runners_up: list[Scored], study: str, search_path: str, how_to_reproduce: str) -> str:
    """The tuned params file: the winner's point (dotted keys), with how it was chosen and how to reproduce it,
    and the runners-up, as comments."""
    lines = [
        "# The tuned model: the trial of the study with the best validation accuracy",
        f"# (study {study!r} of {search_path}; the test split was not looked at).",
        f"# {how_to_reproduce}",
        f"# trial {winner.trial}: validation accuracy {winner.val_acc!r}",
        "# runners-up:",
        *(f"#   trial {s.trial}: {s.val_acc:.4f}  " + ", ".join(f"{k}={v}" for k, v in s.point.items())
          for s in runners_up),
    ]
    return "\n".join(lines) + "\n" + yaml.safe_dump(winner.point, sort_keys=False, default_flow_style=False)


def load_tuned(path: str | Path, when_missing: str = "") -> dict[str, Any]:
    """The params a tuned file sets (dotted keys)."""
    path = Path(path)
    values = _read_yaml(path, "tuned params file", when_missing)
    if not isinstance(values, dict) or not all(isinstance(k, str) and "." in k for k in values):
        raise SearchError(f"tuned params file {path} must map dotted params keys (train.lr) to values")
    return values
