"""How close a rebuilt output comes to the committed one: identical bytes, within tolerance, or drift.

On x86-64 the pinned kernels (:mod:`pipeline.kernels`) give identical bytes.
On another architecture, or on a GPU, the same maths rounds differently, so
the question becomes whether the rebuilt outputs are the same model and the
same results up to that rounding:

- model files: every weight within :data:`WEIGHT_TOLERANCE` of the
  committed one, and every other field (kind, classes, params) equal;
- metrics (``metrics.json``) and the per-epoch histories: accuracies and F1
  within :data:`ACCURACY_BAND`, losses within :data:`LOSS_RTOL` (relative),
  counts (epochs) equal;
- figures, pages and the tables computed from the models (confusion, per
  class, worked examples) are *derived*: within tolerance when every model,
  metric and history of the rebuild is, drift otherwise;
- data (``data/``): integer arrays, no rounding involved: identical or drift.

Any other difference, or a committed version whose bytes are not in the DVC
cache to compare with, is drift.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

WEIGHT_TOLERANCE = 1e-4
"""Largest absolute difference of a weight that still counts as the same model. Scratch and concise, the
same arithmetic in two orders of operations, end within 1e-5 of each other (a test checks it): rounding of
that kind, which another CPU brings, leaves a factor of ten; the weights themselves are of order 0.01-1."""

ACCURACY_BAND = 0.002
"""Largest difference of an accuracy or F1 that still counts as the same result: two standard deviations of
what a reseed moves it. The scratch model's final test accuracy over ``train.seed`` 0-7 at the default
params: 0.8313 to 0.8343, standard deviation 0.0009. A rebuild that moves an accuracy less than most
reseeds do is the same experiment; one that moves it more is not."""

LOSS_RTOL = 1e-3
"""Largest relative difference of a loss: a loss moves far less than an accuracy when weights move by
:data:`WEIGHT_TOLERANCE` (it is smooth in them, while an accuracy counts argmax flips)."""

MCE_BAND = 0.05
"""Largest difference of a maximum calibration error: the worst bin's gap, and a bin of a few dozen images
moves by a few hundredths per prediction that flips. The expected calibration error weighs each bin by its
images, so one flip moves it by at most 1/n: it takes :data:`ACCURACY_BAND`, as the Brier score does."""

IDENTICAL, WITHIN, DRIFT = "identical", "within tolerance", "drift"
OUTCOMES = (IDENTICAL, WITHIN, DRIFT)
"""From best to worst: an out's outcome is the worst of its files'."""

NOT_CACHED = "is not in the DVC cache to compare with (`dvc pull` it, or build it once where dvc.lock was made)"
"""Why a difference cannot be judged, and how to make it judgeable."""

EXACT_DIRS = ("data",)
"""Outs under these folders hold integer data: any difference is drift."""


@dataclass(frozen=True)
class Verdict:
    outcome: str
    detail: str = ""

    def worse(self, other: Verdict) -> Verdict:
        return other if OUTCOMES.index(other.outcome) > OUTCOMES.index(self.outcome) else self


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def number_tolerance(name: str) -> tuple[str, float] | None:
    """How a number named ``name`` may move: ``("abs", band)``, ``("rel", rtol)``, or None (exactly)."""
    lowered = name.lower()
    if "mce" in lowered:
        return "abs", MCE_BAND
    if "acc" in lowered or "f1" in lowered or "ece" in lowered or "brier" in lowered:
        return "abs", ACCURACY_BAND
    if "loss" in lowered or "temperature" in lowered:  # smooth in the weights
        return "rel", LOSS_RTOL
    return None


def compare_numbers(name: str, committed: float, rebuilt: float) -> Verdict:
    if committed == rebuilt:
        return Verdict(IDENTICAL)
    rule = number_tolerance(name)
    difference = abs(rebuilt - committed)
    if rule is None or not (math.isfinite(committed) and math.isfinite(rebuilt)):
        return Verdict(DRIFT, f"{name} is {rebuilt!r}, committed {committed!r}")
    kind, bound = rule
    allowed = bound if kind == "abs" else bound * abs(committed)
    shown = f"{name} {committed:.6g} -> {rebuilt:.6g} (tolerance {bound:g}{' relative' if kind == 'rel' else ''})"
    return Verdict(WITHIN if difference <= allowed else DRIFT, shown)


def compare_records(committed: dict, rebuilt: dict, prefix: str = "") -> Verdict:
    """Nested mappings of numbers (metrics.json): the same keys, each number within its tolerance."""
    if not isinstance(committed, dict) or not isinstance(rebuilt, dict):
        return Verdict(DRIFT, f"{prefix or 'the file'} is {rebuilt!r:.60}, committed {committed!r:.60}")
    if set(committed) != set(rebuilt):
        return Verdict(DRIFT, f"keys differ: {sorted(set(committed) ^ set(rebuilt))}")
    verdict = Verdict(IDENTICAL)
    for key in sorted(committed):
        a, b, name = committed[key], rebuilt[key], f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            verdict = verdict.worse(compare_records(a, b, f"{name}."))
        elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            verdict = verdict.worse(compare_numbers(name, float(a), float(b)))
        elif a != b:
            verdict = verdict.worse(Verdict(DRIFT, f"{name} is {b!r}, committed {a!r}"))
    return verdict


def compare_tables(committed: bytes, rebuilt: bytes) -> Verdict:
    """CSV tables of numbers (a per-epoch history): the same columns and rows, each cell within the
    tolerance its column's name gives."""
    a, b = (list(csv.DictReader(io.StringIO(data.decode()))) for data in (committed, rebuilt))
    if len(a) != len(b):
        return Verdict(DRIFT, f"{len(b)} rows, committed {len(a)}")
    verdict = Verdict(IDENTICAL)
    for row, (x, y) in enumerate(zip(a, b), start=1):
        if x.keys() != y.keys():  # a long row keeps its extra cells under the key None
            return Verdict(DRIFT, f"row {row}: columns {', '.join(map(str, y))}, committed {', '.join(map(str, x))}")
        for column in x:
            try:
                verdict = verdict.worse(compare_numbers(f"{column} (row {row})", float(x[column]), float(y[column])))
            except (ValueError, TypeError):  # text, or a cell a short or long row lacks (None) or adds (a list)
                if x[column] != y[column]:
                    verdict = verdict.worse(Verdict(DRIFT, f"{column} (row {row}) is {y[column]!r}"))
    return verdict


def _split_tensors(value, path: str = "") -> tuple[object, dict[str, object]]:
    """``value`` with every tensor replaced by its path, and ``{path: tensor}``: the weights and the
    standardization's statistics are compared by tolerance, everything else exactly."""
    import torch

    if isinstance(value, torch.Tensor):
        return f"<tensor {path}>", {path: value}
    if isinstance(value, dict):
        plain, tensors = {}, {}
        for key, item in value.items():
            plain[key], found = _split_tensors(item, f"{path}.{key}" if path else str(key))
            tensors.update(found)
        return plain, tensors
    return value, {}


def compare_model_files(committed: bytes, rebuilt: bytes) -> Verdict:
    """Two model files: equal fields, and weights (and standardization statistics) within
    :data:`WEIGHT_TOLERANCE`."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (a, tensors_a), (b, tensors_b) = (
                _split_tensors(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
                for data in (committed, rebuilt))
    except Exception as exc:  # not a model file of ours: torch raises many types
        return Verdict(DRIFT, f"not comparable as model files ({type(exc).__name__})")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return Verdict(DRIFT, "not comparable as model files (not a mapping)")
    if a != b:
        fields = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
        return Verdict(DRIFT, f"model fields differ: {', '.join(fields)}")
    if any(tensors_a[k].shape != tensors_b[k].shape for k in tensors_a):
        return Verdict(DRIFT, "the weights have other shapes")
    differences = [float((tensors_a[k].double() - tensors_b[k].double()).abs().max()) for k in tensors_a]
    if not all(map(math.isfinite, differences)):  # max() would pass over a NaN that comes after a number
        return Verdict(DRIFT, "the weights hold NaN or infinity")
    largest = max(differences, default=0.0)
    detail = f"weights differ by at most {largest:.2g} (tolerance {WEIGHT_TOLERANCE:g})"
    return Verdict(WITHIN if largest <= WEIGHT_TOLERANCE else DRIFT, detail)


def compare_file(path: str, committed: bytes | None, rebuilt: bytes | None) -> Verdict | None:
    """The verdict on one file of an out (``path`` relative to the project), or None for a derived file
    whose verdict follows the value-compared ones (see the module docstring)."""
    if committed is not None and rebuilt is not None and committed == rebuilt:
        return Verdict(IDENTICAL)
    if rebuilt is None:
        return Verdict(DRIFT, f"{path} was not written by the rebuild")
    if committed is None:
        return Verdict(DRIFT, f"{path}: the committed version {NOT_CACHED}")
    pure = PurePosixPath(path)
    if pure.parts[0] in EXACT_DIRS:
        return Verdict(DRIFT, f"{path} holds data: it must be identical")
    try:
        if pure.suffix == ".pt":
            return compare_model_files(committed, rebuilt)
        if pure.name == "metrics.json":
            return compare_records(json.loads(committed), json.loads(rebuilt))
        if pure.name.endswith("_history.csv"):
            return compare_tables(committed, rebuilt)
    except (ValueError, UnicodeDecodeError) as exc:
        return Verdict(DRIFT, f"{path} is not readable as its kind ({type(exc).__name__})")
    return None


@dataclass(frozen=True)
class OutCheck:
    stage: str
    path: str
    verdict: Verdict

    def line(self) -> str:
        detail = f": {self.verdict.detail}" if self.verdict.detail else ""
        return f"{self.verdict.outcome}: {self.path} (out of {self.stage}){detail}"


class DvcCache:
    """The committed bytes of outs, read from a DVC cache directory (DVC 3's ``files/md5`` layout)."""

    def __init__(self, directory: Path):
        self.directory = directory

    def read(self, md5: str) -> bytes | None:
        path = self.directory / "files" / "md5" / md5[:2] / md5[2:]
        return path.read_bytes() if path.is_file() else None

    def listing(self, md5: str) -> dict[str, str] | None:
        """``{relative path: md5}`` of a committed directory out, from its ``.dir`` manifest."""
        data = self.read(md5)
        if data is None:
            return None
        return {entry["relpath"]: entry["md5"] for entry in json.loads(data)}


def rebuilt_listing(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): md5_hex(p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file()}


def check_out(path: str, committed_md5: str, rebuilt_root: Path, cache: DvcCache) -> tuple[Verdict, bool]:
    """The verdict on one out, and whether it is derived (its files are compared by bytes only)."""
    target = rebuilt_root / path
    if not committed_md5.endswith(".dir"):
        rebuilt = target.read_bytes() if target.is_file() else None
        if rebuilt is not None and md5_hex(rebuilt) == committed_md5:
            return Verdict(IDENTICAL), False
        verdict = compare_file(path, cache.read(committed_md5), rebuilt)
        return (verdict, False) if verdict is not None else (Verdict(WITHIN), True)
    committed = cache.listing(committed_md5)
    rebuilt = rebuilt_listing(target) if target.is_dir() else {}
    if committed is None:
        if not target.is_dir():
            return Verdict(DRIFT, f"{path} was not written by the rebuild"), False
        return Verdict(DRIFT, f"{path}: the committed listing {NOT_CACHED}"), False
    verdict, derived = Verdict(IDENTICAL), False
    for name in sorted(set(committed) | set(rebuilt)):
        if committed.get(name) == rebuilt.get(name):
            continue
        file = f"{path}/{name}"
        if name not in committed:
            verdict = verdict.worse(Verdict(DRIFT, f"{file} is not in the committed out"))
            continue
        found = compare_file(file, cache.read(committed[name]),
                             (target / name).read_bytes() if name in rebuilt else None)
        if found is None:
            derived = True
            found = Verdict(WITHIN)
        verdict = verdict.worse(found)
    return verdict, derived


def check_outs(stages: dict, rebuilt_root: Path, cache: DvcCache) -> list[OutCheck]:
    """Every out of a dvc.lock's ``stages`` mapping against the files under ``rebuilt_root``."""
    checks, derived = [], []
    for stage, body in stages.items():
        for out in body.get("outs") or []:
            verdict, is_derived = check_out(out["path"], str(out.get("md5")), rebuilt_root, cache)
            pending = is_derived and verdict.outcome == WITHIN  # decided once the value-compared outs are
            (derived if pending else checks).append(OutCheck(stage, out["path"], verdict))
    values_drift = any(check.verdict.outcome == DRIFT for check in checks)
    for check in derived:
        outcome = DRIFT if values_drift else WITHIN
        detail = ("rendered from models or metrics that drift" if values_drift
                  else "rendered from models and metrics within tolerance; its bytes differ")
        checks.append(OutCheck(check.stage, check.path, Verdict(outcome, detail)))
    return checks
