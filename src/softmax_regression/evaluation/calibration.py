"""Are the probabilities honest? Calibration of a classifier's softmax outputs, and temperature scaling.

A model is calibrated when, of the images it gives confidence ``c`` (the
probability of its predicted class), a fraction ``c`` is right. With equal-width
bins ``B_m`` of confidence over ``[0, 1]``:

    ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|      (expected calibration error)
    MCE = max_m |acc(B_m) - conf(B_m)|                 (maximum, over non-empty bins)
    Brier = 1/n sum_i sum_k (p_ik - [y_i = k])^2

Temperature scaling (Guo et al., 2017) divides the logits by one scalar ``T``
fitted on the validation split: ``softmax(o / T)``. ``T > 1`` softens
over-confident outputs, ``T < 1`` sharpens under-confident ones, and the argmax,
so the accuracy, never changes. ``log p`` serves as the logits: softmax is
unchanged by adding a constant to a row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softmax_regression.evaluation import with_temperature

TEMPERATURE_BOUNDS = (0.05, 20.0)
"""Where the fitted temperature is searched (on a log scale)."""
_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's numbers: per equal-width confidence bin, the images in it, their mean
    confidence and the fraction of them predicted right (NaN for an empty bin)."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def gaps(self) -> np.ndarray:
        """Accuracy minus confidence per bin: negative where the model is over-confident."""
        return self.accuracy - self.confidence

    def ece(self) -> float:
        filled = self.counts > 0
        return float(np.sum(self.counts[filled] / self.counts.sum() * np.abs(self.gaps[filled])))

    def mce(self) -> float:
        filled = self.counts > 0
        return float(np.max(np.abs(self.gaps[filled]))) if filled.any() else 0.0

    def over_confidence(self) -> float:
        """The count-weighted mean of confidence minus accuracy: > 0 over-confident, < 0 under-confident."""
        filled = self.counts > 0
        return float(np.sum(self.counts[filled] / self.counts.sum() * -self.gaps[filled]))


def binned(confidence: np.ndarray, correct: np.ndarray, bins: int) -> Reliability:
    """:class:`Reliability` of confidences in ``[0, 1]`` and whether each was right, in ``bins`` equal-width
    bins; a confidence on an inner edge belongs to the bin below it, 0 to the first bin."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    return Reliability(edges, counts, mean_confidence, accuracy)


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> Reliability:
    """The reliability of the predicted class's probability (top-label calibration)."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(predicted)), predicted]
    return binned(confidence, predicted == np.asarray(labels), bins)


def classwise_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> np.ndarray:
    """One-vs-rest ECE of each class: ``p_k`` against whether the image is of class ``k``, over all images."""
    labels = np.asarray(labels)
    return np.array([binned(probabilities[:, k], labels == k, bins).ece() for k in range(probabilities.shape[1])])


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    onehot = np.eye(probabilities.shape[1])[np.asarray(labels)]
    return float(np.mean(np.sum((np.asarray(probabilities, dtype=np.float64) - onehot) ** 2, axis=1)))


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p(true class)``, clipped at float64's epsilon (as the test loss is)."""
    p_true = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(p_true, _EPS, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray, tolerance: float = 1e-4) -> float:
    """The ``T`` in :data:`TEMPERATURE_BOUNDS` that minimises the NLL of :func:`with_temperature`: a
    golden-section search on ``log T`` (the NLL of softmax(o / T) is unimodal in T for fixed logits).
    Call it with the validation split's probabilities only."""
    def nll(log_t: float) -> float:
        return negative_log_likelihood(with_temperature(probabilities, float(np.exp(log_t))), labels)

    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    while high - low > tolerance:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return float(np.exp((low + high) / 2.0))


@dataclass(frozen=True)
class Calibration:
    """A model's calibration on the test split, before and after the temperature fitted on validation."""

    bins: int
    reliability: Reliability
    ece: float
    mce: float
    brier: float
    nll: float
    per_class_ece: np.ndarray
    temperature: float
    calibrated: Reliability
    """The test split's reliability with the temperature applied."""

    def summary(self) -> dict:
        """What goes into the metrics file and MLflow: plain floats."""
        return {
            "test_ece": round(self.ece, 6), "test_mce": round(self.mce, 6), "test_brier": round(self.brier, 6),
            "temperature": round(self.temperature, 6), "test_ece_calibrated": round(self.calibrated.ece(), 6),
        }


def calibrate(test_probabilities: np.ndarray, test_labels: np.ndarray, val_probabilities: np.ndarray,
              val_labels: np.ndarray, bins: int) -> Calibration:
    """Calibration on the test split, with the temperature fitted on the validation split alone."""
    temperature = fit_temperature(val_probabilities, val_labels)
    before = reliability(test_probabilities, test_labels, bins)
    return Calibration(
        bins=bins,
        reliability=before,
        ece=before.ece(),
        mce=before.mce(),
        brier=brier_score(test_probabilities, test_labels),
        nll=negative_log_likelihood(test_probabilities, test_labels),
        per_class_ece=classwise_ece(test_probabilities, test_labels, bins),
        temperature=temperature,
        calibrated=reliability(with_temperature(test_probabilities, temperature), test_labels, bins),
    )


def verdict(name: str, before: Reliability, after: Reliability, temperature: float,
            fitted_on: str) -> str:
    """One sentence on what a model's reliability diagram shows: which way it leans, by how much, and what
    the temperature fitted on ``fitted_on`` does to the test ECE."""
    lean = before.over_confidence()
    how = "over-confident" if lean > 0 else "under-confident"
    return (f"The {name} model is {how}: its confidence is on average {abs(lean) * 100:.1f} points "
            f"{'above' if lean > 0 else 'below'} its accuracy (ECE {before.ece():.4f}); the temperature "
            f"{temperature:.3f}, fitted on {fitted_on}, brings the test ECE to {after.ece():.4f} "
            "and changes no prediction.")


RELIABILITY_COLUMNS = ("bin_low", "bin_high", "count", "confidence", "accuracy", "calibrated_count",
                       "calibrated_confidence", "calibrated_accuracy")


def reliability_csv(calibration: Calibration) -> str:
    """One row per bin, before and after the temperature (empty cells for empty bins): a plot of confidence
    against accuracy, and what the report reads back."""
    before, after = calibration.reliability, calibration.calibrated

    def cell(x: float) -> str:
        return "" if np.isnan(x) else f"{x:.6f}"

    rows = [",".join(RELIABILITY_COLUMNS)]
    for m in range(len(before.counts)):
        rows.append(",".join([f"{before.edges[m]:.6f}", f"{before.edges[m + 1]:.6f}", str(int(before.counts[m])),
                              cell(before.confidence[m]), cell(before.accuracy[m]), str(int(after.counts[m])),
                              cell(after.confidence[m]), cell(after.accuracy[m])]))
    return "\n".join(rows) + "\n"


def read_reliability_csv(text: str, images: int | None = None) -> tuple[Reliability, Reliability]:
    """The two :class:`Reliability` (before, after the temperature) of :func:`reliability_csv`'s text: bins
    that tile 0 to 1 and, before and after alike, count ``images`` images (where given). A table cut short
    would give the report another ECE than the metrics file's."""
    lines = text.strip().splitlines()
    if not lines or tuple(lines[0].split(",")) != RELIABILITY_COLUMNS:
        raise ValueError(f"not a reliability table: its header should be {','.join(RELIABILITY_COLUMNS)}")
    rows = [[float(x) if x else np.nan for x in line.split(",")] for line in lines[1:]]
    table = np.array(rows, dtype=np.float64).reshape(-1, len(RELIABILITY_COLUMNS))
    if not len(table) or table[0, 0] != 0 or table[-1, 1] != 1 or np.any(table[1:, 0] != table[:-1, 1]):
        raise ValueError("its bins do not tile the confidences from 0 to 1")
    before, after = int(table[:, 2].sum()), int(table[:, 5].sum())
    if before != after or (images is not None and before != images):
        raise ValueError(f"its bins count {before} images before the temperature and {after} after"
                         + (f", not the {images} test images" if images is not None else ""))
    edges = np.append(table[:, 0], table[-1, 1])
    return (Reliability(edges, table[:, 2].astype(np.int64), table[:, 3], table[:, 4]),
            Reliability(edges, table[:, 5].astype(np.int64), table[:, 6], table[:, 7]))
