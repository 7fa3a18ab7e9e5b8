"""The pinned kernels give the same bits on other CPUs: the code paths that decide the pipeline's outputs,
run natively and under qemu-user emulating CPUs of another vendor and another generation.

This machine's own CPU is whatever the session got (AVX-512 ones among them); qemu's CPUs have no AVX-512,
so the emulated runs execute other instructions than the native one unless the pins hold.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pipeline import kernels
from softmax_regression.data.idx import read_images, read_labels
from support import PROJECT_ROOT, clean_env

PROBE = Path(__file__).with_name("bits_probe.py")
EMULATED = {
    "EPYC": "AuthenticAMD (Zen), AVX2, no AVX-512",
    "Nehalem": "GenuineIntel, SSE4.2, no AVX",
}
"""qemu CPU models the pinned bits are checked on: another vendor, and a generation without AVX."""
TRAIN_ROWS, VAL_ROWS = 1024, 512


@pytest.fixture(scope="module")
def qemu() -> str:
    path = shutil.which("qemu-x86_64")
    if path is None:
        pytest.fail("qemu-x86_64 not found: apt-get install -y qemu-user (.ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def subset(tmp_path_factory, system_data_dir) -> Path:
    """The first training images of the real Fashion-MNIST: 1,024 to train on, 512 to validate on."""
    images = read_images(system_data_dir / "train-images-idx3-ubyte.gz").reshape(-1, 784)
    labels = read_labels(system_data_dir / "train-labels-idx1-ubyte.gz")
    path = tmp_path_factory.mktemp("bits") / "subset.npz"
    end = TRAIN_ROWS + VAL_ROWS
    np.savez(path, train_x=images[:TRAIN_ROWS], train_y=labels[:TRAIN_ROWS],
             val_x=images[TRAIN_ROWS:end], val_y=labels[TRAIN_ROWS:end])
    return path


def probe(subset: Path, env: dict[str, str], emulate: tuple[str, str] | None = None, *extra: str) -> dict:
    """Run the probe (under qemu with ``emulate = (qemu, cpu model)``) and return what it printed."""
    prefix = [emulate[0], "-cpu", emulate[1]] if emulate else []
    env = {**env, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    result = subprocess.run([*prefix, sys.executable, str(PROBE), str(subset), *extra], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"probe failed on {emulate}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.splitlines()[-1])


def bits(found: dict) -> dict:
    return {key: value for key, value in found.items() if key not in ("chosen", "cpu_features")}


@pytest.mark.timeout(1800)  # three probes, two of them emulated (about 40 s each on an idle machine)
def test_pinned_bits_are_the_same_on_an_amd_cpu_and_on_one_without_avx(qemu, subset):
    pinned = kernels.pinned_environment(clean_env())
    with ThreadPoolExecutor(max_workers=len(EMULATED)) as pool:
        emulated = dict(zip(EMULATED, pool.map(lambda cpu: probe(subset, pinned, (qemu, cpu)), EMULATED)))
    native = probe(subset, pinned)
    assert native["chosen"] == kernels.EXPECTED
    # the emulated processes saw the emulated CPUs, not this machine's
    assert "AVX512F" not in emulated["EPYC"]["cpu_features"] and "AVX2" in emulated["EPYC"]["cpu_features"]
    assert "AVX" not in emulated["Nehalem"]["cpu_features"] and "SSE42" in emulated["Nehalem"]["cpu_features"]
    for cpu, found in emulated.items():
        assert found["chosen"] == kernels.EXPECTED, cpu
        assert bits(found) == bits(native), f"{cpu} ({EMULATED[cpu]}) computed other bits than this machine"


@pytest.mark.timeout(1800)
def test_without_the_pins_an_older_cpu_computes_other_bits(qemu, subset):
    """The check above has teeth: with each library choosing for the CPU at hand (here one with AVX2 and
    FMA or more, there the emulated Nehalem without AVX), the training's bits differ, and so do libm's."""
    unpinned = {k: v for k, v in clean_env().items() if k not in kernels.PINNED_NAMES}
    # torch and libm are enough to show it: the baseline's solver is left out (importing scikit-learn under
    # the emulator costs seconds)
    native = probe(subset, unpinned, None, "--torch-only")
    emulated = probe(subset, unpinned, (qemu, "Nehalem"), "--torch-only")
    assert native["chosen"]["torch"] != "DEFAULT", "this machine has no AVX2: the control needs a newer CPU"
    assert emulated["chosen"]["torch"] == "DEFAULT"
    assert emulated["scratch"] != native["scratch"] and emulated["concise"] != native["concise"]
    assert emulated["libm"] != native["libm"]  # glibc's FMA variants of exp and log here, its SSE2 ones there
