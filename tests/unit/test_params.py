"""validate_params / load_params: every key given (params.yaml is the one place of the defaults), and one
clear line for every bad or missing entry."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import subprocess
import sys

import pytest
import yaml

from samples import project_params
from softmax_regression.params import SCHEMA, ParamsError, Rule, excerpt, flatten_params, load_params, validate_params
from support import PROJECT_ROOT

DEFAULTS = load_params(PROJECT_ROOT / "params.yaml")
"""The project's params: a test changes what it is about on top of them (:func:`with_value`)."""


def one_line_error(raw) -> str:
    with pytest.raises(ParamsError) as info:
        validate_params(raw)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def with_value(dotted: str, value) -> dict:
    """The project's params with one value set (or one key added)."""
    return project_params({dotted: value})


def without(dotted: str) -> dict:
    """The project's params without one key (``train.lr``) or one whole section (``train``)."""
    raw = project_params()
    section, _, key = dotted.partition(".")
    if key:
        del raw[section][key]
    else:
        del raw[section]
    return raw


def missing(section: str, key: str) -> str:
    return f"params key {section}.{key} is missing; expected {SCHEMA[section][key].allowed}"


FIRST_KEY = {section: next(iter(rules)) for section, rules in SCHEMA.items()}


# ---- good params --------------------------------------------------------------------------------


def test_the_projects_params_are_kept_as_given():
    raw = project_params()
    assert validate_params(raw) == raw == DEFAULTS
    assert set(DEFAULTS) == set(SCHEMA)
    for section, rules in SCHEMA.items():
        assert list(DEFAULTS[section]) == list(rules)


def test_given_values_kept_and_the_rest_as_the_file_has_them():
    params = validate_params(project_params({"train.lr": 0.5, "train.epochs": 3, "data.resize": 32,
                                             "data.val_size": 0}))
    assert params["train"] == {**DEFAULTS["train"], "lr": 0.5, "epochs": 3}
    assert params["data"] == {**DEFAULTS["data"], "resize": 32, "val_size": 0}
    assert params["evaluate"] == DEFAULTS["evaluate"]


def test_validate_does_not_modify_its_input():
    raw = with_value("train.lr", 0.5)
    before = copy.deepcopy(raw)
    validate_params(raw)
    assert raw == before


# ---- missing keys and sections ------------------------------------------------------------------


@pytest.mark.parametrize("dotted", [f"{section}.{key}" for section, rules in SCHEMA.items() for key in rules])
def test_a_missing_key_is_one_line_naming_it(dotted):
    section, key = dotted.split(".")
    assert one_line_error(without(dotted)) == missing(section, key)


@pytest.mark.parametrize("section", list(SCHEMA))
@pytest.mark.parametrize("how", ["left out", "nothing under it", "empty mapping"])
def test_a_missing_section_is_one_line_naming_its_first_key(section, how):
    """A section left out, ``train:`` with nothing under it (YAML's null) or ``train: {}``: each of its keys is
    missing, and the line names the first."""
    if how == "left out":
        raw = without(section)
    else:
        raw = {**project_params(), section: None if how == "nothing under it" else {}}
    assert one_line_error(raw) == missing(section, FIRST_KEY[section])


@pytest.mark.parametrize("raw", [None, {}], ids=["none", "empty"])
def test_no_params_at_all_is_the_first_key_missing(raw):
    assert one_line_error(raw) == "params key data.system_dir is missing; expected a directory path or null"


def test_the_schema_holds_rules_and_no_defaults():
    """One place for the defaults, params.yaml: a rule is what is allowed and its check, and every value the
    project's file gives passes its check."""
    assert [field.name for field in dataclasses.fields(Rule)] == ["allowed", "check"]
    for section, rules in SCHEMA.items():
        for key, rule in rules.items():
            assert rule.allowed and rule.check(DEFAULTS[section][key]), f"{section}.{key}"


@pytest.mark.parametrize("dotted,value", [
    ("train.lr", 1), ("train.lr", 1e-6), ("train.weight_decay", 0), ("train.device", "cpu"),
    ("train.device", "cuda"), ("data.resize", 4), ("data.resize", 112), ("train.loss", "squared"), ("train.loss", "margin"), ("data.val_size", 30000),
    ("train.schedule", "step"), ("train.schedule", "cosine"), ("data.normalize", "global"), ("data.normalize", "per_pixel"),
    ("train.seed", 2**64 - 1), ("data.seed", 2**32 - 1), ("data.deadline", 5),
    ("data.timeout", 0.5), ("data.timeout", 3600), ("data.deadline", 86400), ("data.retries", 0),
    ("data.retries", 100), ("data.val_size", 0), ("data.val_size", 10), ("train.epochs", 100000), ("train.batch_size", 60000),
    ("train.device", "auto"), ("data.local_dir", "/some/dir"), ("data.system_dir", None),
    ("data.mirrors", ["http://a/", "https://b/"]), ("data.mirrors", []), ("evaluate.baseline", False),
    ("baseline.max_iter", 10000), ("baseline.tol", 1e-9), ("report.n_images", 1), ("report.n_mistakes", 100),
])
def test_edge_values_accepted(dotted, value):
    section, key = dotted.split(".")
    assert validate_params(with_value(dotted, value))[section][key] == value


def test_project_params_yaml_validates():
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert set(params) == set(SCHEMA)
    for section, rules in SCHEMA.items():
        assert set(params[section]) == set(rules)
    # every key the project writes is one the schema knows (load_params would have raised otherwise)
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for section, values in raw.items():
        for key, value in (values or {}).items():
            assert params[section][key] == value


def test_flatten_params_gives_dotted_keys():
    flat = flatten_params(DEFAULTS)
    assert flat["train.lr"] == DEFAULTS["train"]["lr"] and flat["data.val_size"] == DEFAULTS["data"]["val_size"]
    assert len(flat) == sum(len(v) for v in DEFAULTS.values())
    assert set(flatten_params(DEFAULTS, sections=("train",))) == {f"train.{k}" for k in DEFAULTS["train"]}


# ---- unknown names ------------------------------------------------------------------------------


def test_unknown_section():
    message = one_line_error({**project_params(), "trian": {"lr": 0.1}})
    assert "'trian'" in message
    for section in SCHEMA:
        assert section in message  # what is allowed


@pytest.mark.parametrize("dotted", ["train.lrr", "data.mirror", "evaluate.C", "tracking.uri"])
def test_unknown_key(dotted):
    section, _ = dotted.split(".")
    message = one_line_error(with_value(dotted, 1))
    assert f"unknown params key {dotted};" in message
    for allowed in SCHEMA[section]:
        assert allowed in message


def test_unknown_key_next_to_good_ones():
    message = one_line_error(project_params({"train.lr": 0.1, "train.epochs": 2, "train.lr_decay": 0.5}))
    assert "train.lr_decay" in message


@pytest.mark.parametrize("raw", [[1, 2], "lr: 0.1", 3])
def test_params_that_are_not_a_mapping(raw):
    assert "must be a mapping" in one_line_error(raw)


@pytest.mark.parametrize("section_value", [[], 0, False, "", ["lr"], "x"])
def test_section_that_is_not_a_mapping(section_value):
    message = one_line_error({**project_params(), "train": section_value})
    assert "'train'" in message and "must be a mapping" in message and repr(section_value) in message


# ---- wrong types and out-of-range values --------------------------------------------------------

EXPERIMENT_NAMES = "a non-empty string of at most 500 characters (MLflow's limit)"
MODEL_NAMES = ("a non-empty string of at most 250 characters without '/', ':' or quotes, not '.' nor starting with '..' "
               "(MLflow's model names)")

MIRRORS = "a list of http(s) base URLs, each naming a host and no login"

BAD_VALUES = [
    # wrong type
    ("train.lr", "0.1", "a number > 0"),
    ("train.lr", None, "a number > 0"),
    ("train.lr", True, "a number > 0"),
    ("train.epochs", True, "an integer between 1 and 100000"),
    ("train.epochs", 2.0, "an integer between 1 and 100000"),
    ("train.epochs", "10", "an integer between 1 and 100000"),
    ("train.batch_size", False, "an integer between 1 and 60000"),
    ("train.seed", 1.5, "an integer between 0 and 18446744073709551615 (torch's seed range)"),
    ("data.retries", True, "an integer between 0 and 100"),
    ("data.timeout", "30", "a number of seconds > 0 and <= 3600"),
    ("data.mirrors", "https://example.org/", MIRRORS),
    ("data.mirrors", ["ftp://example.org/"], MIRRORS),
    ("data.mirrors", [None], MIRRORS),
    ("data.mirrors", ["http://[abc/"], MIRRORS),  # urllib: "Invalid IPv6 URL"
    ("data.mirrors", ["http:///fashion/"], MIRRORS),  # urllib: "no host given"
    ("data.mirrors", ["https://example.org:port/"], MIRRORS),
    ("data.mirrors", ["https://example.org/", "http://"], MIRRORS),
    ("data.mirrors", ["https://alice:s3cret@example.org/"], MIRRORS),  # urllib: the host "alice:s3cret@..."
    ("data.mirrors", ["https://alice@example.org/"], MIRRORS),
    ("data.local_dir", 5, "a directory path or null"),
    ("data.local_dir", "", "a directory path or null"),
    ("data.system_dir", ["/usr"], "a directory path or null"),
    ("evaluate.baseline", "yes", "true or false"),
    ("evaluate.baseline", 1, "true or false"),
    ("evaluate.calibration_bins", 1, "an integer between 2 and 100"),
    ("evaluate.calibration_bins", 15.0, "an integer between 2 and 100"),
    ("evaluate.calibration_bins", 101, "an integer between 2 and 100"),
    ("tracking.experiment", "", EXPERIMENT_NAMES),
    ("tracking.experiment", "   ", EXPERIMENT_NAMES),
    ("tracking.registered_model", 7, MODEL_NAMES),
    # out of range
    ("train.lr", 0, "a number > 0"),
    ("train.lr", 0.0, "a number > 0"),
    ("train.lr", -1, "a number > 0"),
    ("train.lr", math.nan, "a number > 0"),
    ("train.lr", math.inf, "a number > 0"),
    ("train.lr", -math.inf, "a number > 0"),
    ("train.batch_size", 0, "an integer between 1 and 60000"),
    ("train.batch_size", -256, "an integer between 1 and 60000"),
    ("train.epochs", 0, "an integer between 1 and 100000"),
    ("train.weight_decay", -0.01, "a number >= 0"),
    ("train.weight_decay", math.nan, "a number >= 0"),
    ("train.init_std", 0, "a number > 0"),
    ("train.seed", -1, "an integer between 0 and 18446744073709551615 (torch's seed range)"),
    ("train.seed", 2**64, "an integer between 0 and 18446744073709551615 (torch's seed range)"),
    ("train.seed", 2**70, "an integer between 0 and 18446744073709551615 (torch's seed range)"),
    ("data.seed", 2**32, "an integer between 0 and 4294967295 (numpy's seed range)"),
    ("data.deadline", 0, "a number of seconds > 0 and <= 86400"),
    ("train.device", "tpu", "one of cpu, cuda, auto"),
    ("train.loss", "hinge", "one of cross_entropy, squared, margin"),
    ("train.schedule", "linear", "one of constant, step, cosine"),
    ("data.normalize", True, "one of none, global, per_pixel"),
    ("train.loss", None, "one of cross_entropy, squared, margin"),
    ("train.device", "CPU", "one of cpu, cuda, auto"),
    ("data.val_size", -1, "0 or an integer between 10 and 30000 (one image of each class)"),
    ("data.val_size", 30001, "0 or an integer between 10 and 30000 (one image of each class)"),
    ("data.resize", 2, "null or an integer side length between 4 and 112"),
    ("data.resize", 113, "null or an integer side length between 4 and 112"),
    ("data.resize", 224, "null or an integer side length between 4 and 112"),
    ("data.resize", 28.0, "null or an integer side length between 4 and 112"),
    ("data.timeout", 0, "a number of seconds > 0 and <= 3600"),
    ("data.timeout", math.inf, "a number of seconds > 0 and <= 3600"),
    ("data.retries", -1, "an integer between 0 and 100"),
    ("data.seed", -5, "an integer between 0 and 4294967295 (numpy's seed range)"),
    ("baseline.max_iter", 0, "an integer between 1 and 10000"),
    ("baseline.max_iter", 10001, "an integer between 1 and 10000"),
    ("baseline.C", 0, "a number > 0"),
    ("baseline.tol", 0, "a number > 0 and < 1"),
    ("baseline.tol", 1, "a number > 0 and < 1"),
    ("report.n_images", 0, "an integer between 1 and 100"),
    ("report.n_mistakes", 101, "an integer between 1 and 100"),
    # past what the stages can use: each failed later, not naming the key
    ("train.lr", 10**400, "a number > 0"),  # too large for a float: OverflowError
    ("train.weight_decay", -10**400, "a number >= 0"),
    ("data.val_size", 1, "0 or an integer between 10 and 30000 (one image of each class)"),  # scikit-learn's
    ("data.val_size", 9, "0 or an integer between 10 and 30000 (one image of each class)"),  # stratified split
    ("data.timeout", 1e10, "a number of seconds > 0 and <= 3600"),  # the socket's timeout overflows
    ("data.timeout", 3600.5, "a number of seconds > 0 and <= 3600"),
    ("data.deadline", 86401, "a number of seconds > 0 and <= 86400"),
    ("data.retries", 101, "an integer between 0 and 100"),
    ("train.epochs", 100001, "an integer between 1 and 100000"),
    ("train.batch_size", 60001, "an integer between 1 and 60000"),
    ("train.batch_size", 2**80, "an integer between 1 and 60000"),
]


@pytest.mark.parametrize("dotted,value,allowed", BAD_VALUES, ids=[f"{d}={v!r}" for d, v, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_key_value_and_allowed(dotted, value, allowed):
    message = one_line_error(with_value(dotted, value))
    assert message == f"params key {dotted} is {excerpt(value)}; expected {allowed}"


def test_first_bad_entry_in_schema_order_is_reported():
    message = one_line_error(project_params({"train.lr": 0, "train.epochs": 0, "data.resize": 2}))
    assert "data.resize" in message  # data is checked before train
    # and a bad value before a missing key in the same section
    raw = project_params({"data.resize": 2})
    del raw["data"]["seed"]
    assert "data.resize is 2" in one_line_error(raw)


# ---- load_params --------------------------------------------------------------------------------


def project_file_with(path, **lines: str):
    """The project's params.yaml written to ``path`` with the line of each train key given replaced
    (``lr="lr: .nan"``)."""
    text = (PROJECT_ROOT / "params.yaml").read_text()
    for key, line in lines.items():
        text, found = re.subn(rf"(?m)^  {key}: .*$", f"  {line}", text)
        assert found == 1, key
    path.write_text(text)
    return path


def test_load_params_reads_yaml_nan_and_strings_as_yaml_types(tmp_path):
    path = tmp_path / "params.yaml"
    project_file_with(path, lr="lr: .nan")
    with pytest.raises(ParamsError, match=r"^params key train\.lr is nan; expected a number > 0$"):
        load_params(path)
    project_file_with(path, lr="lr: '0.1'")
    with pytest.raises(ParamsError, match=r"^params key train\.lr is '0\.1'; expected a number > 0$"):
        load_params(path)
    project_file_with(path, lr="lr: 1.0e-3", epochs="epochs: 3")
    params = load_params(path)
    assert params["train"]["lr"] == 0.001 and params["train"]["epochs"] == 3


NUMBER_SPELLINGS = ["1e-05", "1e5", "1E+3", "+1e2", "-2.5e-3", "1.0e-5", "1.e3", "0.1", "10", ".5e1", "1e", "e5",
                    "1e-3x", ".inf", "0x1A",
                    # YAML 1.1 (PyYAML) reads these as octal, base 60, or booleans; 1.2 as decimal, or text
                    "010", "-010", "08", "0o10", "1:30", "1:30.5", "12:60", "yes", "No", "on", "OFF", "y",
                    "True", "0b11", "1_000", ".5e3", ".5e+3", "-.5", "0o8", "_1"]


@pytest.mark.parametrize("spelling", NUMBER_SPELLINGS)
def test_a_number_reads_as_dvc_reads_it(spelling):
    """DVC reads params.yaml with ruamel's YAML 1.2, where ``1e-05`` is a number and ``010`` is ten (PyYAML's
    YAML 1.1 makes them a string and eight): one file, one set of params. ``data.seed: 010`` split by seed 8
    while dvc.lock said 10, so setting 10 later reran nothing."""
    from ruamel.yaml import YAML

    from softmax_regression.params import parse_params_yaml

    as_dvc_reads_it = YAML(typ="safe", pure=True).load(f"k: {spelling}\n")["k"]
    read = parse_params_yaml(f"k: {spelling}\n")["k"]
    assert (type(read), read) == (type(as_dvc_reads_it), as_dvc_reads_it)


def test_a_value_dvc_exp_run_set_validates(tmp_path):
    """``dvc exp run -S train.lr=0.00001 -S train.weight_decay=1e-5`` writes both as ``1e-05``."""
    path = project_file_with(tmp_path / "params.yaml", lr="lr: 1e-05", weight_decay="weight_decay: 1e-05")
    params = load_params(path)
    assert params["train"]["lr"] == 0.00001 and params["train"]["weight_decay"] == 0.00001


def test_nesting_past_what_a_params_file_holds_is_one_line(tmp_path):
    """PyYAML builds a document by recursion: 3,000 nested lists would end it in a RecursionError."""
    from softmax_regression.params import MAX_DEPTH

    path = project_file_with(tmp_path / "params.yaml", lr="lr: " + "[" * 3000 + "]" * 3000)
    line = 1 + path.read_text().splitlines().index("  lr: " + "[" * 3000 + "]" * 3000)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == (f"params file {path}: nesting deeper than {MAX_DEPTH} levels on line {line}: a "
                               "params file holds sections of keys and short lists")
    project_file_with(path, lr="lr: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2))
    with pytest.raises(ParamsError, match=r"^params key train\.lr is \[\[\["):  # as deep as allowed: read
        load_params(path)


def test_load_params_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ParamsError, match="not found") as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_load_params_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "not valid YAML" in message


def test_load_params_empty_file_is_every_key_missing(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# nothing\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == "params key data.system_dir is missing; expected a directory path or null"


def test_load_params_names_a_key_the_file_lacks(tmp_path):
    """A line deleted from params.yaml: the key is not given a default, it is refused in one line."""
    path = tmp_path / "params.yaml"
    text = (PROJECT_ROOT / "params.yaml").read_text()
    text, found = re.subn(r"(?m)^  weight_decay: .*\n", "", text)
    assert found == 1
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == "params key train.weight_decay is missing; expected a number >= 0"
    path.write_text(re.sub(r"(?m)^train:\n(  .*\n|\s*#.*\n)*", "train:\n", (PROJECT_ROOT / "params.yaml").read_text()))
    assert "train:\nbaseline:" in path.read_text()  # `train:` with nothing under it
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == "params key train.epochs is missing; expected an integer between 1 and 100000"


def test_every_choice_the_schema_allows_is_implemented():
    """The choice lists live beside what they choose between (``models``, ``data``, ``training``); the schema
    allows exactly those, and each choice must build and run in the modules that implement it."""
    import numpy as np
    import torch

    from samples import chapter_model
    from softmax_regression.data import NORMALIZATIONS
    from softmax_regression.data.features import Standardization
    from softmax_regression.models import CHAPTER_KINDS, LOSSES
    from softmax_regression.training import DEVICES, SCHEDULES
    from softmax_regression.training.loop import learning_rates, resolve_device

    for dotted, choices in {"train.loss": LOSSES, "train.schedule": SCHEDULES, "train.device": DEVICES,
                            "data.normalize": NORMALIZATIONS}.items():
        section, key = dotted.split(".")
        assert SCHEMA[section][key].allowed == f"one of {', '.join(choices)}", dotted
        assert all(SCHEMA[section][key].check(choice) for choice in choices), dotted
        assert DEFAULTS[section][key] == choices[0], dotted  # the first is the default, the chapter's
    assert SCHEMA["train"]["loss"].check("squared") and not SCHEMA["train"]["loss"].check("hinge")
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(6, 4, generator=g), torch.randint(0, 10, (6,), generator=g)
    for loss in LOSSES:
        for kind in CHAPTER_KINDS:
            net, step, weights = chapter_model(kind, torch.zeros(4, 10), lr=0.1, loss=loss)
            value, logits = step(X, y, 0.1)
            assert math.isfinite(float(value)) and logits.shape == (6, 10), (kind, loss)
            assert not torch.equal(weights()[0], torch.zeros(4, 10)), (kind, loss)  # the step moved them
    for schedule in SCHEDULES:
        assert len(learning_rates(0.1, 4, schedule)) == 4
    images = np.arange(40, dtype=np.uint8).reshape(10, 4)
    assert Standardization.fit(images, NORMALIZATIONS[0]) is None
    for mode in NORMALIZATIONS[1:]:
        assert Standardization.fit(images, mode) is not None
    assert resolve_device(DEVICES[0]) == torch.device("cpu")  # the default: the committed bits
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_the_params_check_imports_no_torch():
    """The choices are read where torch is never imported: checking params.yaml costs no torch import."""
    code = ("import sys; import softmax_regression.params; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'sklearn', 'mlflow'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout
