"""Scoring a classifier on a split: accuracy, mean loss, per-class precision / recall / F1, confusion matrix."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from softmax_regression import CLASS_NAMES
from softmax_regression.evaluation import accuracy
from softmax_regression.models import CHAPTER_KINDS, MODEL_KINDS


@dataclass
class Evaluation:
    name: str
    accuracy: float
    loss: float
    confusion: np.ndarray
    """``[true, predicted]`` counts."""
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray

    def summary(self) -> dict:
        """What goes into the metrics file and MLflow: plain floats."""
        return {
            "test_accuracy": round(self.accuracy, 6),
            "test_loss": round(self.loss, 6),
            "macro_f1": round(float(self.f1.mean()), 6),
        }

    @property
    def confidence(self) -> np.ndarray:
        """The probability given to the predicted class, per row."""
        return self.probabilities[np.arange(len(self.predicted)), self.predicted]

    def per_class_rows(self) -> list[dict]:
        return [
            {"model": self.name, "class": CLASS_NAMES[c], "precision": round(float(self.precision[c]), 6),
             "recall": round(float(self.recall[c]), 6), "f1": round(float(self.f1[c]), 6),
             "support": int(self.support[c])}
            for c in range(len(CLASS_NAMES))
        ]


def evaluate_probabilities(name: str, probabilities: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Score predicted class probabilities ``[N, K]`` against true labels ``[N]``.

    Everything follows from the confusion matrix, counted with numpy (scikit-learn's
    metrics agree to the last digit, a test checks it, and cost a second of imports):
    precision = diagonal / column sums, recall = diagonal / row sums (0 where nothing
    was predicted or present), F1 their harmonic mean; the loss is the mean of
    ``-log p(true class)``, clipped at float64's epsilon as scikit-learn's ``log_loss`` does.
    """
    k = len(CLASS_NAMES)
    labels = np.asarray(labels).astype(np.int64)
    predicted = probabilities.argmax(axis=1)
    confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    hits = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_counts > 0, hits / predicted_counts, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    p_true = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    eps = np.finfo(np.float64).eps
    return Evaluation(
        name=name,
        accuracy=accuracy(probabilities, labels),
        loss=float(-np.log(np.clip(p_true, eps, 1 - eps)).mean()),
        confusion=confusion,
        precision=precision, recall=recall, f1=f1, support=support,
        predicted=predicted, probabilities=probabilities,
    )


def predictions_csv(evaluation: Evaluation, labels: np.ndarray) -> str:
    """``actual,predicted,probability`` per test image: class names (a long-format confusion table that
    plotting tools draw) and the probability of the predicted class, so that nothing is scored twice."""
    lines = ["actual,predicted,probability"]
    lines += [f"{CLASS_NAMES[a]},{CLASS_NAMES[p]},{c:.6f}"
              for a, p, c in zip(labels, evaluation.predicted, evaluation.confidence)]
    return "\n".join(lines) + "\n"


def read_predictions_csv(text: str, images: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The predicted class indices and their probabilities from :func:`predictions_csv`'s text: one row per
    test image (``images`` of them, where given)."""
    rows = text.strip().splitlines()
    if not rows or rows[0] != "actual,predicted,probability":
        raise ValueError("not a predictions table: its header should be actual,predicted,probability")
    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    predicted, confidence = [], []
    for row in rows[1:]:
        _, name, probability = row.rsplit(",", 2)
        predicted.append(index[name])
        confidence.append(float(probability))
    if images is not None and len(predicted) != images:
        raise ValueError(f"{len(predicted)} rows, not one per test image ({images})")
    return np.array(predicted, dtype=np.int64), np.array(confidence)


PER_CLASS_COLUMNS = ("model", "class", "precision", "recall", "f1", "support")


def per_class_csv(evaluations: list[Evaluation]) -> str:
    """Precision, recall, F1 and support of each class, one row per model and class."""
    rows = [row for e in evaluations for row in e.per_class_rows()]
    return "\n".join([",".join(PER_CLASS_COLUMNS)] + [",".join(str(r[h]) for h in PER_CLASS_COLUMNS)
                                                     for r in rows]) + "\n"


def read_per_class_csv(text: str, models: Iterable[str] = ()) -> list[dict]:
    """The rows of :func:`per_class_csv`'s text, with numbers as numbers: one per class, in order, for each of
    ``models`` (and of any other model the file holds)."""
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    if tuple(reader.fieldnames or ()) != PER_CLASS_COLUMNS:
        raise ValueError(f"not a per-class table: its header should be {','.join(PER_CLASS_COLUMNS)}")
    classes: dict[str, list[str]] = {model: [] for model in models}
    for r in rows:
        classes.setdefault(r["model"], []).append(r["class"])
    wrong = [model for model, found in classes.items() if found != list(CLASS_NAMES)]
    if wrong or not classes:
        raise ValueError(f"no rows of {wrong[0]} with one per class" if wrong else "no rows")
    for r in rows:
        for key in ("precision", "recall", "f1"):
            r[key] = float(r[key])
        r["support"] = int(r["support"])
    return rows


SCORES = ("test_accuracy", "val_accuracy", "temperature")
"""What a model's entry in the metrics file must hold for the report."""


def read_scores_json(text: str, required: tuple[str, ...] = SCORES) -> dict[str, dict]:
    """The metrics file's scores of each model, in :data:`MODEL_KINDS` order; both of the chapter's models
    must be there (the baseline is optional: ``evaluate.baseline``), each with the ``required`` numbers."""
    scored = json.loads(text)
    if not isinstance(scored, dict):
        raise ValueError(f"a mapping of models expected, not {type(scored).__name__}")
    missing = [kind for kind in CHAPTER_KINDS if kind not in scored]
    if missing:
        raise ValueError(f"no scores of {', '.join(missing)}")
    metrics = {name: scored[name] for name in MODEL_KINDS if name in scored}
    for name, values in metrics.items():
        lacking = [key for key in required
                   if not isinstance(values, dict) or not isinstance(values.get(key), (int, float))]
        if lacking:
            raise ValueError(f"{name} lacks {', '.join(lacking)}")
    return metrics


def most_confident_mistakes(predicted: np.ndarray, confidence: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` wrong predictions made with the highest probability, most confident first."""
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-confidence[wrong], kind="stable")[:n]]


def best_by_validation(val_accuracy: dict[str, float]) -> str:
    """The model with the highest validation accuracy; a tie goes to the one listed first."""
    return max(val_accuracy, key=lambda name: (val_accuracy[name], -list(val_accuracy).index(name)))
