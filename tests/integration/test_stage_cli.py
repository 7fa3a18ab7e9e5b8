"""The stage commands as DVC runs them: `python -m pipeline <stage>` in a copy of the project; the fetches beside
the real data (Debian's dataset-fashion-mnist, installed by .ci/run)."""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from support import clean_env, copy_project, run

RAW_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("stage-cli") / "template")


@pytest.fixture
def project(template, tmp_path) -> Path:
    """A fresh copy of the project (git repo, no DVC outs) for one test."""
    return Path(shutil.copytree(template, tmp_path / "p", symlinks=True))


def stage(project: Path, name: str, *args: str):
    return run([sys.executable, "-m", "pipeline", name, *args], project, clean_env(), check=False,
               timeout=120)


def write_params(project: Path, path: str = "params.yaml", **changes) -> Path:
    """The project's params.yaml with ``changes`` (``data__local_dir=...``) applied, written to ``path``."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params.setdefault(section, {})[key] = value
    target = project / path
    target.write_text(yaml.safe_dump(params, sort_keys=False))
    return target


def error_lines(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{name}: error:")]


def assert_nothing_written(project: Path) -> None:
    assert not (project / "data").exists()
    assert not (project / "reports").exists()


def offline_params(project: Path, system_dir, path: str = "params.yaml", **changes) -> Path:
    return write_params(project, path, data__system_dir=str(system_dir) if system_dir else None,
                        data__local_dir=None, data__mirrors=[], **changes)


# ---- bad params: exit 2, one line, nothing written ---------------------------------------------

BAD_PARAMS = [
    ("train", {"lrr": 0.1}, "train.lrr"),
    ("train", {"lr": 0}, "train.lr"),
    ("data", {"resize": 2}, "data.resize"),
    ("data", {"val_size": "5000"}, "data.val_size"),
    ("tracking", {"experiment": ""}, "tracking.experiment"),
]


@pytest.mark.parametrize("section,change,key", BAD_PARAMS, ids=[k for _, _, k in BAD_PARAMS])
def test_fetch_with_bad_params_exits_2_and_writes_nothing(project, system_data_dir, section, change, key):
    # everything else is good, with a real source: only validation can stop the fetch
    params = offline_params(project, system_data_dir, "bad-params.yaml")
    raw = yaml.safe_load(params.read_text())
    raw.setdefault(section, {}).update(change)
    params.write_text(yaml.safe_dump(raw))
    result = stage(project, "fetch", "--params", "bad-params.yaml", "--no-progress")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fetch: error: ") and key in lines[0]
    if "lrr" not in key:
        assert repr(change[key.split(".")[1]]) in lines[0]  # the value
    assert "expected" in lines[0] or "allowed" in lines[0]  # what is allowed
    assert result.stdout == ""
    assert_nothing_written(project)


def test_fetch_with_unknown_section_exits_2(project, system_data_dir):
    params = offline_params(project, system_data_dir)
    params.write_text(params.read_text() + "trainig:\n  lr: 0.1\n")
    result = stage(project, "fetch")  # the default --params params.yaml
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fetch: error: unknown params section 'trainig'; allowed: ")
    assert all(section in lines[0] for section in ("data", "train", "evaluate", "report", "tracking"))
    assert_nothing_written(project)


def test_fetch_with_missing_params_file_exits_2(project):
    result = stage(project, "fetch", "--params", "no-such.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["fetch: error: params file no-such.yaml not found"]
    assert_nothing_written(project)


def test_preprocess_with_bad_params_exits_2_and_writes_nothing(project):
    offline_params(project, None, "bad.yaml", train__device="tpu")
    result = stage(project, "preprocess", "--params", "bad.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "preprocess: error: params key train.device is 'tpu'; expected one of cpu, cuda, auto"
    ]
    assert_nothing_written(project)


# ---- no data source: exit 1, one line naming the ways to get the data ---------------------------


@pytest.mark.parametrize("system", ["empty-dir", "null"])
def test_fetch_without_any_source_exits_1(project, tmp_path, system):
    empty = tmp_path / "empty-system"
    empty.mkdir()
    offline_params(project, empty if system == "empty-dir" else None)
    result = stage(project, "fetch", "--no-progress")
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr, "fetch")
    assert len(errors) == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]  # the last word is the error
    assert "apt-get install -y dataset-fashion-mnist" in errors[0]
    assert "data.local_dir" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (project / "data" / "raw").exists()
    assert not (project / "data").exists() or list((project / "data").iterdir()) == []


# ---- --help -------------------------------------------------------------------------------------


def test_fetch_help(project):
    result = stage(project, "fetch", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    for text in ("--params", "[default: params.yaml]", "--no-progress", "--help", "data/raw/",
                 "data.system_dir", "data.local_dir", "data.mirrors", "SHA-256"):
        assert text in result.stdout, text
    assert_nothing_written(project)


def test_preprocess_help(project):
    result = stage(project, "preprocess", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    for text in ("--params", "--help", "data/processed/", "stats.json", "preview.png", "validation"):
        assert text in result.stdout, text
    assert_nothing_written(project)


def test_launcher_lists_every_stage_with_its_summary(project):
    result = run([sys.executable, "-m", "pipeline", "--help"], project, clean_env(), check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: python -m pipeline [OPTIONS] STAGE [ARGS]...")
    # what a user runs and why, not the launcher's inner workings (its module docstring)
    assert "`python -m pipeline.kernels` shows them" in result.stdout and "gc.freeze" not in result.stdout
    commands = {stage["cmd"].split()[3] for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].values()}
    listed = result.stdout.split("Stages:", 1)[1]
    for name, summary in (("fetch", "put the four verified Fashion-MNIST IDX"), ("train_baseline", "LogisticRegression"),
                          ("evaluate", "score the models on the test split"), ("report", "the chapter's prediction step")):
        assert name in listed and summary in listed, name
    assert commands <= {line.split()[0] for line in listed.splitlines() if line[:3].strip()}


def test_launcher_names_an_unknown_stage_and_exits_2(project):
    result = run([sys.executable, "-m", "pipeline", "evalute"], project, clean_env(), check=False, timeout=60)
    assert result.returncode == 2
    assert "No such command 'evalute'" in result.stderr
    assert_nothing_written(project)


def test_a_stage_help_through_the_launcher_names_the_launcher(project):
    result = stage(project, "evaluate", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: python -m pipeline evaluate [OPTIONS]")
    assert "--params" in result.stdout and "score the models on the test split" in result.stdout


def test_the_launcher_imports_with_the_collector_paused_then_frozen():
    """What the imports made is frozen out of the collector's sight; the collector runs again after."""
    import gc

    from pipeline.__main__ import imports_frozen

    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    try:
        with imports_frozen():
            assert not gc.isenabled()
            made = [[] for _ in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(made)
    finally:
        gc.unfreeze()


# ---- preprocess on a corrupt raw file ----------------------------------------------------------


def test_fetch_from_system_copy_then_preprocess_rejects_truncated_labels(project, system_data_dir):
    offline_params(project, system_data_dir)
    result = stage(project, "fetch", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"system copy {system_data_dir}" in result.stderr
    raw = project / "data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(RAW_NAMES)
    for name in RAW_NAMES:
        assert (raw / name).read_bytes() == gzip.decompress((system_data_dir / f"{name}.gz").read_bytes())
    assert sorted(p.name for p in (project / "data").iterdir()) == ["raw"]

    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-100])
    result = stage(project, "preprocess")
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr, "preprocess")
    assert errors == [
        "preprocess: error: data/raw/train-labels-idx1-ubyte: dimensions 60000 need 60000 data bytes, "
        "file has 59900"
    ], result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "data" / "processed").exists()
    assert not (project / "reports").exists()
    assert sorted(p.name for p in (project / "data").iterdir()) == ["raw"]  # no temp dirs left
