"""The numeric kernels every stage runs on, pinned so that dvc.lock does not depend on the CPU.

MKL (torch's matrix products), ATen (torch's own kernels), OpenBLAS (numpy's
and scipy's, under scikit-learn), numpy's SIMD loops and glibc's libm each
pick their code for the CPU at hand: its vendor, its vector width, its
generation. One seed and one thread still give other bits on another CPU.
Each library has a switch that fixes its choice, read once, when it loads;
:data:`PINNED` sets every one of them to code that runs on any x86-64 CPU
with SSE4.2 (x86-64-v2, which numpy itself requires), and is the same code
on all of them:

- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility
  branch that gives the same results on Intel and AMD (its AVX2 branch does not);
- ``ATEN_CPU_CAPABILITY=default``: ATen's kernels built for the x86-64
  baseline, not its AVX2 or AVX-512 builds;
- ``OPENBLAS_CORETYPE=Nehalem``: OpenBLAS's SSE kernels, whose blocking is
  fixed (for some older core types it follows the cache size);
- ``NPY_DISABLE_CPU_FEATURES``: numpy's dispatched loops off, its x86-64-v2 baseline on;
- ``GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA,-FMA4``: libm's ``exp`` and ``log``
  in their SSE2 variants (the FMA ones round a few results differently; with
  FMA masked, glibc takes the FMA4 ones on the AMD CPUs that have FMA4).

glibc reads its tunables when a process starts, and the others when their
library loads, so :func:`ensure_pinned` puts them in the environment and starts the
interpreter again before anything numeric is imported (``python -m
pipeline`` calls it first). ``python -m pipeline.kernels`` prints what each
library chose.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

PINNED: dict[str, str] = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "default",
    "OPENBLAS_CORETYPE": "Nehalem",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
}
"""Each library's own switch for its kernel choice, and the portable value (see the module docstring)."""

HWCAPS_TUNABLE = "glibc.cpu.hwcaps"
MASKED_HWCAPS = ("-AVX2", "-FMA", "-FMA4")
"""What keeps libm on its SSE2 code: glibc's ``ifunc-fma4.h`` picks the FMA code with FMA and AVX2, else
the FMA4 code with FMA4, else SSE2."""
GLIBC_HWCAPS = f"{HWCAPS_TUNABLE}={','.join(MASKED_HWCAPS)}"
"""The tunable as the pins set it where ``GLIBC_TUNABLES`` holds no hwcaps entry of the caller's own."""

ARCHITECTURES = ("x86_64",)
"""Where the pins hold: the machine name (``platform.machine()``) of x86-64 on Linux."""

PINNED_NAMES = (*PINNED, "GLIBC_TUNABLES")
"""Every variable :func:`pinned_environment` sets."""

EXPECTED = {"torch": "DEFAULT", "numpy": "X86_V2", "openblas": "Nehalem"}
"""What :func:`chosen` reports for each library when the pins took effect."""


class KernelsNotPinned(RuntimeError):
    """A numeric library loaded before the pins were in place, so it chose its kernels for this CPU."""


def glibc_tunables(current: str | None) -> str:
    """``GLIBC_TUNABLES`` with the hwcaps mask. glibc reads only the last ``glibc.cpu.hwcaps`` entry, so the
    caller's own entries become one with the mask (their other masks kept, a ``+`` of a masked one dropped),
    after the caller's other tunables; a value pinned already comes back as it is."""
    entries = [entry for entry in (current or "").split(":") if entry]
    caps = [cap for entry in entries if entry.startswith(f"{HWCAPS_TUNABLE}=")
            for cap in entry.split("=", 1)[1].split(",") if cap]
    masked = {cap.lstrip("-") for cap in MASKED_HWCAPS}
    kept = [cap for cap in dict.fromkeys(caps) if cap.lstrip("+-") not in masked]
    others = [entry for entry in entries if not entry.startswith(f"{HWCAPS_TUNABLE}=")]
    return ":".join([*others, f"{HWCAPS_TUNABLE}={','.join([*kept, *MASKED_HWCAPS])}"])


def pinned_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with every pin set; a value of the caller's own for a pinned variable is replaced."""
    env = dict(environ)
    env.update(PINNED)
    env["GLIBC_TUNABLES"] = glibc_tunables(environ.get("GLIBC_TUNABLES"))
    return env


def is_pinned(environ: Mapping[str, str]) -> bool:
    return pinned_environment(environ) == dict(environ)


def portable_here() -> bool:
    """The pins give the committed bits only on x86-64: elsewhere other instructions compute them."""
    return platform.machine() in ARCHITECTURES


def ensure_pinned(argv: list[str]) -> None:
    """Start this interpreter again with the pins in its environment, unless they are there already.

    ``argv`` is the interpreter's own command line (``sys.orig_argv``). The
    new process replaces this one (same PID, same arguments, same standard
    streams), so DVC and a shell see one command. Elsewhere than on x86-64
    the pins have no meaning (OpenBLAS has no Nehalem kernels on aarch64):
    nothing is set there.
    """
    if not portable_here() or is_pinned(os.environ):
        return
    os.execve(sys.executable, [sys.executable, *argv[1:]], pinned_environment(os.environ))


def chosen() -> dict[str, str]:
    """What each numeric library loaded in this process chose: torch's ATen CPU capability, numpy's
    highest SIMD target in use, OpenBLAS's core type (``threadpoolctl``). A library not loaded is left out."""
    found: dict[str, str] = {}
    if "torch" in sys.modules:
        found["torch"] = sys.modules["torch"].backends.cpu.get_cpu_capability()
    if "numpy" in sys.modules:
        from numpy._core import _multiarray_umath as umath

        in_use = [name for name in umath.__cpu_dispatch__ if umath.__cpu_features__.get(name)]
        found["numpy"] = in_use[-1] if in_use else " ".join(umath.__cpu_baseline__)
        from threadpoolctl import threadpool_info

        cores = {info.get("architecture") for info in threadpool_info() if info.get("internal_api") == "openblas"}
        if cores:
            found["openblas"] = " ".join(sorted(str(core) for core in cores))
    return found


def check_chosen() -> None:
    """Raise KernelsNotPinned, naming the library or variable, when a library loaded in this process runs
    other kernels than :data:`EXPECTED` or a pinned variable has another value (on x86-64; elsewhere the
    pins have no portable value to check)."""
    if not portable_here():
        return
    wrong = [f"{lib} runs {got} (expected {EXPECTED[lib]})" for lib, got in chosen().items() if got != EXPECTED[lib]]
    pinned = pinned_environment(os.environ)
    wrong += [f"{name} is {os.environ.get(name)!r} (expected {pinned[name]!r})"
              for name in PINNED_NAMES if os.environ.get(name) != pinned[name]]
    if wrong:
        raise KernelsNotPinned(f"numeric kernels not pinned: {', '.join(wrong)}; run stages as "
                               f"`python -m pipeline STAGE`, which sets {', '.join(PINNED_NAMES)} before they load")


def warn_if_not_portable() -> None:
    """One line on a machine whose outputs cannot be the committed bytes, saying how to compare them."""
    if not portable_here():
        log.warning("this is an %s machine: dvc.lock's bytes are those of x86-64, so outputs here may differ in "
                    "the last bits; `python -m pipeline.ci.reproduce_check` says whether they are within tolerance",
                    platform.machine())


def main() -> None:
    """Print the pinned variables and what each library chose in this process (torch, numpy, OpenBLAS)."""
    ensure_pinned(sys.orig_argv)
    import numpy  # noqa: F401  (loaded to report on it)
    import scipy.linalg  # noqa: F401  (scipy's own OpenBLAS)
    import torch  # noqa: F401

    for name in PINNED_NAMES:
        print(f"{name}={os.environ.get(name, '')}")
    for lib, got in chosen().items():
        print(f"{lib}: {got}" + ("" if got == EXPECTED[lib] else f" (expected {EXPECTED[lib]})"))
    print(f"machine: {platform.machine()}" + ("" if portable_here() else " (not x86-64: no portable bits)"))


if __name__ == "__main__":
    main()
