"""Scoring a classifier on a split: accuracy, mean loss, per-class precision / recall / F1, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import CLASS_NAMES


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
    """Score predicted class probabilities ``[N, K]`` against true labels ``[N]``."""
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support  # a second to import

    classes = list(range(len(CLASS_NAMES)))
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    return Evaluation(
        name=name,
        accuracy=float((predicted == labels).mean()),
        loss=float(log_loss(labels, probabilities, labels=classes)),
        confusion=confusion_matrix(labels, predicted, labels=classes),
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


def read_predictions_csv(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The predicted class indices and their probabilities from :func:`predictions_csv`'s text."""
    rows = text.strip().splitlines()
    if not rows or rows[0] != "actual,predicted,probability":
        raise ValueError("not a predictions table: its header should be actual,predicted,probability")
    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    predicted, confidence = [], []
    for row in rows[1:]:
        _, name, probability = row.rsplit(",", 2)
        predicted.append(index[name])
        confidence.append(float(probability))
    return np.array(predicted, dtype=np.int64), np.array(confidence)


def per_class_csv(evaluations: list[Evaluation]) -> str:
    rows = [row for e in evaluations for row in e.per_class_rows()]
    header = ["model", "class", "precision", "recall", "f1", "support"]
    return "\n".join([",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]) + "\n"


def most_confident_mistakes(predicted: np.ndarray, confidence: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` wrong predictions made with the highest probability, most confident first."""
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-confidence[wrong], kind="stable")[:n]]


def best_by_validation(val_accuracy: dict[str, float]) -> str:
    """The model with the highest validation accuracy; a tie goes to the one listed first."""
    return max(val_accuracy, key=lambda name: (val_accuracy[name], -list(val_accuracy).index(name)))
