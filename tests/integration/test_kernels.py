"""pipeline.kernels: the environment that pins every numeric library's kernel choice, and the launcher that
starts each stage in it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline import kernels
from support import PROJECT_ROOT, clean_env


def test_the_pins_replace_the_callers_values_and_keep_their_other_tunables():
    env = kernels.pinned_environment({"MKL_CBWR": "AUTO", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "HOME": "/x"})
    assert env["MKL_CBWR"] == "COMPATIBLE" and env["HOME"] == "/x"
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{kernels.GLIBC_HWCAPS}"
    assert kernels.is_pinned(env) and not kernels.is_pinned({"HOME": "/x"})
    assert kernels.pinned_environment(env) == env  # pinning twice adds nothing


@pytest.mark.parametrize("current, pinned", [
    ("glibc.cpu.hwcaps=-AVX512F", "glibc.cpu.hwcaps=-AVX512F,-AVX2,-FMA,-FMA4"),  # the caller's mask kept
    # after the pin: glibc would read only the caller's entry, and libm would run its FMA code
    ("glibc.cpu.hwcaps=-AVX2,-FMA:glibc.cpu.hwcaps=-AVX512F", "glibc.cpu.hwcaps=-AVX512F,-AVX2,-FMA,-FMA4"),
    ("glibc.cpu.hwcaps=+FMA,-ERMS:glibc.malloc.arena_max=2",
     "glibc.malloc.arena_max=2:glibc.cpu.hwcaps=-ERMS,-AVX2,-FMA,-FMA4"),  # no + of a masked one
])
def test_the_callers_own_hwcaps_entries_become_one_with_the_mask(current, pinned):
    """glibc reads only the last ``glibc.cpu.hwcaps`` entry of ``GLIBC_TUNABLES``: a second entry, the
    caller's or the pins', would drop the other's masks."""
    env = kernels.pinned_environment({"GLIBC_TUNABLES": current})
    assert env["GLIBC_TUNABLES"] == pinned and env["GLIBC_TUNABLES"].count("glibc.cpu.hwcaps") == 1
    assert kernels.is_pinned(env) and not kernels.is_pinned({**env, "GLIBC_TUNABLES": current})


def test_the_report_shows_every_library_on_its_pinned_kernels():
    result = subprocess.run([sys.executable, "-m", "pipeline.kernels"], cwd=PROJECT_ROOT, env=clean_env(),
                            capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    for name, value in kernels.PINNED.items():
        assert f"{name}={value}" in lines
    for lib, expected in kernels.EXPECTED.items():
        assert f"{lib}: {expected}" in lines
    assert f"GLIBC_TUNABLES={kernels.GLIBC_HWCAPS}" in lines


def test_a_stage_started_without_the_launcher_refuses_in_one_line(tmp_path):
    """`python -m pipeline.train_scratch` skips the launcher, so torch picks its kernels for this CPU (AVX2 or
    AVX-512 on any machine the suite runs on): the stage stops before any work, saying how to run it."""
    result = subprocess.run([sys.executable, "-m", "pipeline.train_scratch"], cwd=tmp_path,
                            env={**clean_env(), "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("train_scratch: error: numeric kernels not pinned: torch runs ")
    assert "`python -m pipeline STAGE`" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_launcher_pins_the_kernels_before_the_stage_loads(tmp_path):
    """Through `python -m pipeline`, the same command gets past the check to its own first error."""
    result = subprocess.run([sys.executable, "-m", "pipeline", "train_scratch"], cwd=tmp_path,
                            env={**clean_env(), "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "train_scratch: error: params file params.yaml not found"


def test_another_architecture_gets_one_line_saying_the_bits_cannot_be_promised(monkeypatch, caplog):
    monkeypatch.setattr(kernels.platform, "machine", lambda: "aarch64")
    with caplog.at_level("WARNING", logger=kernels.__name__):
        kernels.warn_if_not_portable()
        kernels.check_chosen()  # no portable kernels to insist on there
    assert [r.getMessage() for r in caplog.records] == [
        "this is an aarch64 machine: dvc.lock's bytes are those of x86-64, so outputs here may differ in the last "
        "bits; `python -m pipeline.ci.reproduce_check` says whether they are within tolerance"]


def test_on_x86_64_a_library_on_its_own_kernels_is_named(monkeypatch):
    """Every library and variable off its pin is named, in the order of PINNED_NAMES, whatever this machine's
    own environment sets (some set OPENBLAS_CORETYPE for their CPU)."""
    monkeypatch.setattr(kernels, "chosen", lambda: {"torch": "AVX512", "numpy": "X86_V2"})
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")
    for name in kernels.PINNED_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    with pytest.raises(kernels.KernelsNotPinned) as raised:
        kernels.check_chosen()
    assert str(raised.value) == (
        "numeric kernels not pinned: torch runs AVX512 (expected DEFAULT), MKL_CBWR is None (expected 'COMPATIBLE'), "
        "ATEN_CPU_CAPABILITY is None (expected 'default'), OPENBLAS_CORETYPE is 'Haswell' (expected 'Nehalem'), "
        f"NPY_DISABLE_CPU_FEATURES is None (expected {kernels.PINNED['NPY_DISABLE_CPU_FEATURES']!r}), "
        f"GLIBC_TUNABLES is None (expected {kernels.GLIBC_HWCAPS!r}); run stages as `python -m pipeline STAGE`, "
        "which sets MKL_CBWR, ATEN_CPU_CAPABILITY, OPENBLAS_CORETYPE, NPY_DISABLE_CPU_FEATURES, GLIBC_TUNABLES "
        "before they load")
