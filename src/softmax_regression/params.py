"""Reading and validating ``params.yaml``.

Every stage validates the whole file before it does any work, so a typo in a
key another stage reads still stops the pipeline at its first stage, with one
line naming the key, the value and what is allowed. The values, defaults
included, live in ``params.yaml`` alone: here are only the rules, and a key
the file lacks is refused like a wrong one. The choices of a param come from
the package that implements them (``models``, ``data``, ``training``: their
``__init__`` files, which import no torch).
"""

from __future__ import annotations

import math
import re
import reprlib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from softmax_regression import CLASS_NAMES
from softmax_regression.data import NORMALIZATIONS
from softmax_regression.errors import one_line
from softmax_regression.models import LOSSES
from softmax_regression.training import DEVICES, SCHEDULES


class ParamsError(ValueError):
    """params.yaml holds an unknown key, a wrong type or an out-of-range value."""


@dataclass(frozen=True)
class Rule:
    allowed: str
    check: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer literal too large for a float
        return False


def _int_between(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and low <= v <= high


def _one_of(choices: tuple[str, ...]) -> Rule:
    return Rule(f"one of {', '.join(choices)}", lambda v: v in choices)


def _positive_number(v: Any) -> bool:
    return _is_number(v) and v > 0


def _seconds_up_to(high: float) -> Callable[[Any], bool]:
    return lambda v: _positive_number(v) and v <= high


def _non_negative_number(v: Any) -> bool:
    return _is_number(v) and v >= 0


def _optional_str(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v != "")


def _http_url(v: Any) -> bool:
    """An http(s) URL naming a host (and a port, if any, that is a number): what ``urlopen`` can fetch."""
    if not isinstance(v, str):
        return False
    try:
        url = urllib.parse.urlsplit(v)
        url.port  # noqa: B018 (a port that is no number raises here)
    except ValueError:  # an unclosed IPv6 bracket, a port out of range
        return False
    # urllib would take "user:password@host" for the host name, and the password would be in every line
    return url.scheme in ("http", "https") and bool(url.hostname) and url.username is None and url.password is None


def _url_list(v: Any) -> bool:
    return isinstance(v, list) and all(_http_url(u) for u in v)


def _non_empty_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


# MLflow's own limits (mlflow.utils.validation; a test compares them with the installed MLflow's), so a
# value MLflow would refuse halfway through a stage is refused before any work.
MLFLOW_MAX_EXPERIMENT_NAME = 500
"""``MAX_EXPERIMENT_NAME_LENGTH``."""
MLFLOW_MAX_PARAM_VALUE = 6000
"""``MAX_PARAM_VAL_LENGTH``: the stages log the ``train``, ``data`` and ``baseline`` values as run params, and
MLflow cuts a longer one (the run would record another value than the stage used)."""
LOGGED_SECTIONS = ("train", "data", "baseline")


def _experiment_name(v: Any) -> bool:
    return _non_empty_str(v) and len(v) <= MLFLOW_MAX_EXPERIMENT_NAME


def _registered_model_name(v: Any) -> bool:
    """MLflow's ``_validate_model_name``: no ``/`` or ``:``, and not a path that normalises to another or
    leaves its folder (``path_not_unique``: without a ``/`` that is ``.`` and anything starting ``..``); and no
    quote, which MLflow takes but its search filters cannot hold (evaluate finds versions by name)."""
    return (_non_empty_str(v) and not any(c in v for c in "/:'\"") and v != "." and not v.startswith("..")
            and len(v) <= 250)


MAX_RESIZE = 112
"""The largest side a 24 GB machine runs the pipeline at: the baseline fit holds the training split as
float32 (55,000 x r^2 x 4 bytes, 2.8 GB at 112, 11 GB at 224) and streams it twice per iteration."""
MAX_SPLIT_SEED = 2**32 - 1
"""scikit-learn's ``random_state`` is a numpy seed: 0 .. 2**32 - 1."""
MAX_TORCH_SEED = 2**64 - 1
"""``torch.Generator.manual_seed`` takes at most an unsigned 64-bit value."""
MAX_TRAIN_IMAGES = 60_000
"""Fashion-MNIST's training images: a larger batch is the whole split."""

SETTINGS = ("data.system_dir", "data.local_dir", "data.mirrors", "data.timeout", "data.retries", "data.deadline")
"""Where fetch may find the data and how long it may try: they pick a source, not an outcome. fetch's
output is the four files of the official release, each checked against its SHA-256, whatever the
source, so no stage declares these as the params its outputs depend on: a teammate's own ``local_dir``
(an absolute path) or mirror list stays out of the pipeline's lock file and reruns nothing."""

SCHEMA: dict[str, dict[str, Rule]] = {
    "data": {
        "system_dir": Rule("a directory path or null", _optional_str),
        "local_dir": Rule("a directory path or null", _optional_str),
        "mirrors": Rule("a list of http(s) base URLs, each naming a host and no login", _url_list),
        "timeout": Rule("a number of seconds > 0 and <= 3600", _seconds_up_to(3600)),
        "retries": Rule("an integer between 0 and 100", _int_between(0, 100)),
        "deadline": Rule("a number of seconds > 0 and <= 86400", _seconds_up_to(86400)),
        "resize": Rule(f"null or an integer side length between 4 and {MAX_RESIZE}",
                       lambda v: v is None or (_is_int(v) and 4 <= v <= MAX_RESIZE)),
        "val_size": Rule(f"0 or an integer between {len(CLASS_NAMES)} and 30000 (one image of each class)",
                         lambda v: _is_int(v) and (v == 0 or len(CLASS_NAMES) <= v <= 30000)),
        "seed": Rule(f"an integer between 0 and {MAX_SPLIT_SEED} (numpy's seed range)",
                     _int_between(0, MAX_SPLIT_SEED)),
        "normalize": _one_of(NORMALIZATIONS),
    },
    "train": {
        "epochs": Rule("an integer between 1 and 100000", _int_between(1, 100_000)),
        "batch_size": Rule(f"an integer between 1 and {MAX_TRAIN_IMAGES}", _int_between(1, MAX_TRAIN_IMAGES)),
        "lr": Rule("a number > 0", _positive_number),
        "weight_decay": Rule("a number >= 0", _non_negative_number),
        "init_std": Rule("a number > 0", _positive_number),
        "seed": Rule(f"an integer between 0 and {MAX_TORCH_SEED} (torch's seed range)",
                     _int_between(0, MAX_TORCH_SEED)),
        "device": _one_of(DEVICES),
        "loss": _one_of(LOSSES),
        "schedule": _one_of(SCHEDULES),
    },
    "baseline": {
        "C": Rule("a number > 0", _positive_number),
        "tol": Rule("a number > 0 and < 1", lambda v: _positive_number(v) and v < 1),
        "max_iter": Rule("an integer between 1 and 10000", _int_between(1, 10000)),
    },
    "evaluate": {
        "baseline": Rule("true or false", lambda v: isinstance(v, bool)),
        "calibration_bins": Rule("an integer between 2 and 100", _int_between(2, 100)),
    },
    "report": {
        "n_images": Rule("an integer between 1 and 100", _int_between(1, 100)),
        "n_mistakes": Rule("an integer between 1 and 100", _int_between(1, 100)),
    },
    "tracking": {
        "experiment": Rule(f"a non-empty string of at most {MLFLOW_MAX_EXPERIMENT_NAME} "
                           "characters (MLflow's limit)", _experiment_name),
        "registered_model": Rule("a non-empty string of at most 250 characters without '/', ':' or quotes, "
                                 "not '.' nor starting with '..' (MLflow's model names)", _registered_model_name),
    },
}


_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxdict, _EXCERPT.maxlist, _EXCERPT.maxtuple, _EXCERPT.maxset = 2, 4, 4, 4, 4
_EXCERPT.maxstring, _EXCERPT.maxother, _EXCERPT.maxlong = 60, 60, 40
MAX_EXCERPT = 120
"""The longest excerpt of a bad value an error shows: a value may be huge (nested aliases expand to
billions of nodes), and its whole ``repr`` would take that long to build and to read."""


def excerpt(value: Any) -> str:
    """A bounded ``repr`` of ``value`` for an error message."""
    text = _EXCERPT.repr(value)
    return text if len(text) <= MAX_EXCERPT else text[:MAX_EXCERPT - 3] + "..."


def validate_params(raw: Any) -> dict[str, dict[str, Any]]:
    """Return the params, every section and key of :data:`SCHEMA`, or raise ParamsError on the first bad,
    unknown or missing entry."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params must be a mapping of sections, got {type(raw).__name__}")
    for section in raw:
        if section not in SCHEMA:
            raise ParamsError(
                f"unknown params section {excerpt(section)}; allowed: {', '.join(SCHEMA)}"
            )
    params: dict[str, dict[str, Any]] = {}
    for section, rules in SCHEMA.items():
        given = raw.get(section)
        if given is None:  # a section left out, or `train:` with nothing under it; not `train: []` or `train: 0`
            given = {}
        if not isinstance(given, dict):
            raise ParamsError(f"params section {section!r} must be a mapping, got {excerpt(given)}")
        for key in given:
            if key not in rules:
                shown = key if isinstance(key, str) and key.isprintable() and key.strip() == key and key else excerpt(key)
                raise ParamsError(
                    f"unknown params key {section}.{shown}; allowed in {section}: {', '.join(rules)}"
                )
        values = {}
        for key, rule in rules.items():
            if key not in given:
                raise ParamsError(f"params key {section}.{key} is missing; expected {rule.allowed}")
            value = given[key]
            if not rule.check(value):
                raise ParamsError(
                    f"params key {section}.{key} is {excerpt(value)}; expected {rule.allowed}"
                )
            if section in LOGGED_SECTIONS and len(str(value)) > MLFLOW_MAX_PARAM_VALUE:
                raise ParamsError(f"params key {section}.{key} is {excerpt(value)}, {len(str(value))} characters "
                                  f"as an MLflow param; expected at most {MLFLOW_MAX_PARAM_VALUE} (MLflow's limit)")
            values[key] = value
        params[section] = values
    return params


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that reads a number with an exponent as YAML 1.2 does, and refuses a key given twice
    in one mapping, naming it and both lines. (YAML keeps the last of two, and a stricter reader of the same
    file refuses it: one file, two sets of params.)"""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor names it below
                continue
            if first is not None:
                where = f"line {line}, twice" if first == line else f"lines {first} and {line}"  # {lr: 1, lr: 2}
                raise ParamsError(f"duplicate key {excerpt(key)} on {where}")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1; the pipeline tool reads params with YAML 1.2 (ruamel), and the two must read one
# value alike. In 1.1 a float needs a dot (``1e-05``, which the pipeline tool writes for a small number it
# sets, would be a string), ``010`` is octal, ``1:30`` a base-60 number and ``yes``, ``no``, ``on``, ``off``
# booleans; in 1.2 they are 1e-05, 10, text and text. So the numbers and booleans resolve as in 1.2.
_YAML_1_1 = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in _YAML_1_1]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0b[0-1_]+|0o?[0-7_]+|[0-9_]+|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                  |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml_1_2_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """An integer as YAML 1.2 reads it: ``0b``, ``0o``, ``0x`` say the base, a leading zero does not."""
    text = loader.construct_scalar(node).replace("_", "")
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2], 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _yaml_1_2_int)

MAX_DEPTH = 16
"""The deepest nesting of mappings and lists a params file may have (params.yaml has 3, a search file 4):
PyYAML builds a document by recursion, and a deeper one ends it in a RecursionError."""


def parse_params_yaml(text: str) -> Any:
    """The YAML document ``text``, refusing anchors and aliases (``&name``, ``*name``) before anything is
    built: nested aliases expand exponentially (ten levels of nine are 9**10 nodes), and a params file
    has no need of them; and nesting deeper than :data:`MAX_DEPTH`. Then refusing duplicate keys
    (:class:`_StrictLoader`)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):  # events only: an alias is not expanded here
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ParamsError(f"nesting deeper than {MAX_DEPTH} levels on line {event.start_mark.line + 1}: "
                                  "a params file holds sections of keys and short lists")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise ParamsError(f"YAML {kind}{excerpt(event.anchor)[1:-1]} on line {event.start_mark.line + 1}: "
                              "a params file takes no anchors or aliases; write the value out")
    return yaml.load(text, Loader=_StrictLoader)


def load_params(path: str | Path = "params.yaml") -> dict[str, dict[str, Any]]:
    """Read and validate a params file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"params file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"params file {path} cannot be read: {one_line(exc)}") from None
    try:
        raw = parse_params_yaml(text)
    except ParamsError as exc:
        raise ParamsError(f"params file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"params file {path} is not valid YAML: {one_line(exc)}") from None
    return validate_params(raw)


def flatten_params(params: dict[str, dict[str, Any]], sections: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Flat dotted keys (``train.lr``), as MLflow params."""
    flat = {}
    for section, values in params.items():
        if sections is not None and section not in sections:
            continue
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


SHAPING = tuple(f"train.{key}" for key in ("epochs", "batch_size", "lr", "weight_decay", "init_std", "seed", "loss",
                                            "schedule")) + ("data.normalize",)
"""The params that shape a trained model's weights (``train.device`` only picks where they are computed)."""

OMITTED_AT_DEFAULT = {"data.normalize": NORMALIZATIONS[0], "train.schedule": SCHEDULES[0]}
"""Params that shape a model but that a model file records only away from these defaults: a model file
trained without the option does not name it, so its bytes do not depend on options it does not use."""


def shaping_record(values: dict[str, Any]) -> dict[str, Any]:
    """The params a model file records: ``values`` (dotted keys) without those of :data:`OMITTED_AT_DEFAULT`
    that sit at their default."""
    return {key: value for key, value in values.items()
            if key not in OMITTED_AT_DEFAULT or OMITTED_AT_DEFAULT[key] != value}
