"""Scoring and report helpers on tiny synthetic examples whose answers are worked out by hand."""

import base64
import math
from html.parser import HTMLParser

import numpy as np
import pytest

from softmax_regression import CLASS_NAMES
from softmax_regression.evaluation.metrics import (
    best_by_validation,
    evaluate_probabilities,
    most_confident_mistakes,
    per_class_csv,
    predictions_csv,
    read_per_class_csv,
    read_predictions_csv,
)
from softmax_regression.reporting.page import Section, metrics_table_html, render_html, render_markdown

K = len(CLASS_NAMES)

# Six images of classes 0, 1 and 2: four right, two wrong.
LABELS = np.array([0, 0, 1, 2, 2, 1])
PREDICTED = np.array([0, 1, 1, 2, 0, 1])
P_RIGHT, P_WRONG_TRUE, P_WRONG_PRED = 0.7, 0.2, 0.5


def probabilities_for(labels, predicted):
    """Rows summing to one: a right guess holds 0.7; a wrong one 0.5 on the guess and 0.2 on the truth."""
    rows = []
    for y, p in zip(labels, predicted):
        row = np.zeros(K)
        if y == p:
            row[:] = (1 - P_RIGHT) / (K - 1)
            row[y] = P_RIGHT
        else:
            row[:] = (1 - P_WRONG_TRUE - P_WRONG_PRED) / (K - 2)
            row[y], row[p] = P_WRONG_TRUE, P_WRONG_PRED
        rows.append(row)
    return np.array(rows)


@pytest.fixture
def tiny():
    return evaluate_probabilities("tiny", probabilities_for(LABELS, PREDICTED), LABELS)


def test_accuracy_loss_and_predictions_by_hand(tiny):
    assert tiny.name == "tiny"
    np.testing.assert_array_equal(tiny.predicted, PREDICTED)
    assert tiny.accuracy == pytest.approx(4 / 6, abs=1e-12)
    expected_loss = -(4 * math.log(P_RIGHT) + 2 * math.log(P_WRONG_TRUE)) / 6
    assert tiny.loss == pytest.approx(expected_loss, abs=1e-9)


def test_the_chapters_accuracy_on_numpy_and_torch_alike(tiny):
    """``evaluation.correct`` (the chapter's ``accuracy``) counts the rows whose largest entry, a logit or a
    probability, is the true class; ``evaluation.accuracy`` is their fraction: the same numbers for numpy arrays
    and torch tensors, and the evaluation's."""
    import torch

    from softmax_regression.evaluation import accuracy, correct

    probabilities = probabilities_for(LABELS, PREDICTED)
    assert correct(probabilities, LABELS) == correct(torch.from_numpy(probabilities), torch.from_numpy(LABELS)) == 4
    assert type(correct(torch.from_numpy(probabilities), torch.from_numpy(LABELS))) is int
    assert accuracy(probabilities, LABELS) == pytest.approx(4 / 6, abs=1e-12) == tiny.accuracy
    assert accuracy(torch.from_numpy(probabilities), torch.from_numpy(LABELS)) == accuracy(probabilities, LABELS)
    assert accuracy(np.log(probabilities), LABELS) == accuracy(probabilities, LABELS)  # logits alike
    assert accuracy(np.eye(K)[[3, 1]], np.array([3, 1])) == 1.0
    assert isinstance(accuracy(torch.zeros(2, K), torch.tensor([0, 1])), float)


def test_confusion_matrix_by_hand(tiny):
    expected = np.zeros((K, K), dtype=int)
    for true, pred in [(0, 0), (0, 1), (1, 1), (2, 2), (2, 0), (1, 1)]:
        expected[true, pred] += 1
    assert tiny.confusion.shape == (K, K)
    np.testing.assert_array_equal(tiny.confusion, expected)
    assert tiny.confusion.sum() == len(LABELS)
    assert np.trace(tiny.confusion) / tiny.confusion.sum() == pytest.approx(tiny.accuracy)


def test_per_class_precision_recall_f1_by_hand(tiny):
    # class 0: predicted for images 0 and 4, right once; truly 0 for images 0 and 1, found once
    # class 1: predicted for images 1, 2, 5, right twice; truly 1 for images 2 and 5, both found
    # class 2: predicted for image 3 only, right; truly 2 for images 3 and 4, found once
    expected_precision = [1 / 2, 2 / 3, 1.0] + [0.0] * (K - 3)
    expected_recall = [1 / 2, 1.0, 1 / 2] + [0.0] * (K - 3)
    expected_f1 = [1 / 2, 0.8, 2 / 3] + [0.0] * (K - 3)
    np.testing.assert_allclose(tiny.precision, expected_precision, atol=1e-12)
    np.testing.assert_allclose(tiny.recall, expected_recall, atol=1e-12)
    np.testing.assert_allclose(tiny.f1, expected_f1, atol=1e-12)
    np.testing.assert_array_equal(tiny.support, [2, 2, 2] + [0] * (K - 3))


def test_summary_is_plain_rounded_floats(tiny):
    summary = tiny.summary()
    assert set(summary) == {"test_accuracy", "test_loss", "macro_f1"}
    assert all(type(v) is float for v in summary.values())
    assert summary["test_accuracy"] == round(4 / 6, 6)
    assert summary["test_loss"] == round(-(4 * math.log(0.7) + 2 * math.log(0.2)) / 6, 6)
    assert summary["macro_f1"] == round((1 / 2 + 0.8 + 2 / 3) / K, 6)


def test_per_class_csv_has_one_row_per_model_and_class(tiny):
    other = evaluate_probabilities("other", probabilities_for(LABELS, LABELS), LABELS)
    lines = per_class_csv([tiny, other]).splitlines()
    assert lines[0] == "model,class,precision,recall,f1,support"
    assert len(lines) == 1 + 2 * K
    assert lines[1] == "tiny,t-shirt,0.5,0.5,0.5,2"
    assert lines[2] == "tiny,trouser,0.666667,1.0,0.8,2"
    assert lines[1 + K] == "other,t-shirt,1.0,1.0,1.0,2"
    assert [line.split(",")[1] for line in lines[1:1 + K]] == list(CLASS_NAMES)


def test_predictions_csv_is_actual_then_predicted_class_names_and_the_probability(tiny):
    text = predictions_csv(tiny, LABELS)
    # the probability of the predicted class: P_RIGHT on a right guess, P_WRONG_PRED on a wrong one
    assert text == ("actual,predicted,probability\n"
                    "t-shirt,t-shirt,0.700000\n"
                    "t-shirt,trouser,0.500000\n"
                    "trouser,trouser,0.700000\n"
                    "pullover,pullover,0.700000\n"
                    "pullover,t-shirt,0.500000\n"
                    "trouser,trouser,0.700000\n")
    predicted, probability = read_predictions_csv(text)
    assert predicted.tolist() == PREDICTED.tolist()
    np.testing.assert_allclose(probability, [0.7, 0.5, 0.7, 0.7, 0.5, 0.7], atol=1e-6)
    every_class = np.arange(K)
    rows = predictions_csv(evaluate_probabilities("all", probabilities_for(every_class, every_class[::-1]),
                                                  every_class), every_class).splitlines()[1:]
    assert [row.rsplit(",", 1)[0] for row in rows] == [f"{CLASS_NAMES[i]},{CLASS_NAMES[K - 1 - i]}" for i in range(K)]
    assert all(row.count(",") == 2 for row in rows)
    with pytest.raises(ValueError, match="header should be actual,predicted,probability"):
        read_predictions_csv("actual,predicted\nbag,bag\n")
    assert read_predictions_csv(text, images=6)[0].tolist() == PREDICTED.tolist()
    cut = "\n".join(text.splitlines()[:4]) + "\n"  # a table cut short: the report would draw 3 of 6 images
    with pytest.raises(ValueError, match=r"^3 rows, not one per test image \(6\)$"):
        read_predictions_csv(cut, images=6)


def test_the_per_class_table_reads_back_only_whole(tiny):
    """Every model the report scores has one row per class, in order: a table cut at a row or one holding its
    header only is damaged (the report's F1 figure would fail without naming the file)."""
    other = evaluate_probabilities("other", probabilities_for(LABELS, LABELS), LABELS)
    text = per_class_csv([tiny, other])
    rows = read_per_class_csv(text, ["tiny", "other"])
    assert [(r["model"], r["class"]) for r in rows] == [(m, c) for m in ("tiny", "other") for c in CLASS_NAMES]
    assert rows[1]["f1"] == 0.8 and rows[1]["support"] == 2
    lines = text.splitlines()
    for damaged, message in [("\n".join(lines[:1 + K + 3]), "no rows of other with one per class"),
                             (lines[0], "no rows of tiny with one per class"),
                             ("\n".join(lines[:1] + lines[2:]), "no rows of tiny with one per class"),
                             ("model,class,f1\ntiny,bag,1", "header should be model,class,precision,recall,f1,support")]:
        with pytest.raises(ValueError, match=message):
            read_per_class_csv(damaged + "\n", ["tiny", "other"])
    with pytest.raises(ValueError, match="no rows of baseline with one per class"):
        read_per_class_csv(text, ["tiny", "other", "baseline"])


def confident(labels, predicted, confidence):
    """Probabilities whose argmax is ``predicted`` with the given probability on it."""
    rows = np.zeros((len(labels), K))
    for i, (p, c) in enumerate(zip(predicted, confidence)):
        rows[i, :] = (1 - c) / (K - 1)
        rows[i, p] = c
    return evaluate_probabilities("m", rows, np.asarray(labels))


def test_most_confident_mistakes_most_confident_first_ties_in_index_order():
    labels = [0, 1, 2, 3, 4, 5, 6, 7]
    predicted = [0, 2, 3, 4, 4, 6, 7, 7]  # wrong: 1, 2, 3, 5, 6
    confidence = [0.99, 0.40, 0.90, 0.60, 0.98, 0.90, 0.95, 0.97]
    e = confident(labels, predicted, confidence)
    wrong = most_confident_mistakes(e.predicted, e.confidence, np.array(labels), 10)
    # right predictions (0, 4, 7) are left out however confident; 2 and 5 tie at 0.9: index order
    assert wrong.tolist() == [6, 2, 5, 3, 1]
    assert most_confident_mistakes(e.predicted, e.confidence, np.array(labels), 2).tolist() == [6, 2]
    assert most_confident_mistakes(e.predicted, e.confidence, np.array(labels), 0).tolist() == []


def test_most_confident_mistakes_of_a_perfect_model_is_empty():
    labels = np.array([3, 1, 4])
    e = confident(labels, labels, [0.5, 0.6, 0.7])
    assert most_confident_mistakes(e.predicted, e.confidence, labels, 5).tolist() == []


def test_best_by_validation_highest_wins_and_a_tie_goes_to_the_first_listed():
    assert best_by_validation({"scratch": 0.80, "concise": 0.81}) == "concise"
    assert best_by_validation({"concise": 0.81, "scratch": 0.80}) == "concise"
    assert best_by_validation({"scratch": 0.8486, "concise": 0.8486}) == "scratch"
    assert best_by_validation({"concise": 0.8486, "scratch": 0.8486}) == "concise"
    assert best_by_validation({"a": 0.5, "b": 0.7, "c": 0.7}) == "b"
    assert best_by_validation({"only": 0.1}) == "only"


class TableCells(HTMLParser):
    """Every <td>/<th> of an HTML fragment: (tag, attributes, text)."""

    def __init__(self):
        super().__init__()
        self.cells, self._open = [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._open = (tag, dict(attrs), [])

    def handle_data(self, data):
        if self._open:
            self._open[2].append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._open:
            self.cells.append((self._open[0], self._open[1], "".join(self._open[2])))
            self._open = None


def parse_cells(fragment):
    parser = TableCells()
    parser.feed(fragment)
    return parser.cells


def test_metrics_table_marks_every_value_with_its_model_and_metric():
    metrics = {
        "scratch": {"test_accuracy": 0.83316, "test_loss": 0.480754, "macro_f1": 0.830091, "val_accuracy": 0.8486},
        "baseline": {"test_accuracy": 0.845, "test_loss": 0.444934, "macro_f1": 0.843921},
    }
    fragment = metrics_table_html(metrics)
    assert fragment.startswith('<table class="metrics">') and fragment.endswith("</table>")
    cells = parse_cells(fragment)
    headers = [text for tag, _, text in cells[:5]]
    # only metrics some model has, in METRIC_LABELS order: no train_loss column
    assert headers == ["model", "test accuracy", "test loss (cross-entropy)", "macro F1",
                       "validation accuracy"]
    values = {(a["data-model"], a["data-metric"]): text for tag, a, text in cells if tag == "td" and a}
    assert all(a.get("class") == "metric" for tag, a, _ in cells if tag == "td" and a)
    assert values == {
        ("scratch", "test_accuracy"): "0.8332", ("scratch", "test_loss"): "0.4808",
        ("scratch", "macro_f1"): "0.8301", ("scratch", "val_accuracy"): "0.8486",
        ("baseline", "test_accuracy"): "0.8450", ("baseline", "test_loss"): "0.4449",
        ("baseline", "macro_f1"): "0.8439",
    }
    # the baseline has no validation accuracy: a dash, without machine attributes
    assert [(tag, a, text) for tag, a, text in cells if tag == "td" and not a] == [("td", {}, "-")]
    assert [text for tag, _, text in cells if tag == "th"][5:] == ["scratch", "baseline"]


def test_metrics_table_escapes_model_names():
    fragment = metrics_table_html({'a<b & "c"': {"test_accuracy": 0.5}})
    assert "<b &" not in fragment
    (td,) = [a for tag, a, _ in parse_cells(fragment) if tag == "td"]
    assert td["data-model"] == 'a<b & "c"' and td["data-metric"] == "test_accuracy"


def test_render_html_embeds_images_as_data_uris():
    png = b"\x89PNG\r\n\x1a\nnot really a png"
    page = render_html("A <title>", "intro", [
        Section("First", "some text", [("alt one", png)], table_html="<table></table>"),
        Section("Second", images=[("alt two", png), ("alt three", b"x")]),
    ])
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>A &lt;title&gt;</title>" in page
    assert page.count("<img ") == 3 and page.count("<section>") == 2
    prefix = 'src="data:image/png;base64,'
    start = page.index(prefix) + len(prefix)
    assert base64.b64decode(page[start:page.index('"', start)]) == png
    assert "http://" not in page and "https://" not in page


def test_render_markdown_table_and_figure_links():
    md = render_markdown("T", {"scratch": {"test_accuracy": 0.83316, "train_loss": 0.45},
                               "baseline": {"test_accuracy": 0.845}},
                         [("predictions.png", "figures/predictions.png")], ["a note"])
    lines = md.splitlines()
    assert lines[0] == "# T"
    assert "| model | test accuracy | train loss (last epoch) |" in lines
    assert "| scratch | 0.8332 | 0.4500 |" in lines
    assert "| baseline | 0.8450 | - |" in lines
    assert "- a note" in lines
    assert "![predictions.png](figures/predictions.png)" in lines


def test_numpy_scores_agree_with_scikit_learn():
    """evaluate_probabilities counts with numpy; scikit-learn's metrics are the reference."""
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2000, K)) * 3
    logits[:, 9] -= 50  # class 9 is never predicted: precision 0 by convention, not NaN
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = rng.integers(0, K, size=2000)
    e = evaluate_probabilities("m", probabilities, labels)
    precision, recall, f1, support = precision_recall_fscore_support(labels, e.predicted, labels=list(range(K)),
                                                                     zero_division=0)
    np.testing.assert_array_equal(e.confusion, confusion_matrix(labels, e.predicted, labels=list(range(K))))
    np.testing.assert_allclose(e.precision, precision, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e.recall, recall, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e.f1, f1, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(e.support, support)
    assert e.precision[9] == 0 and e.f1[9] == 0
    assert e.loss == pytest.approx(log_loss(labels, probabilities, labels=list(range(K))), abs=1e-12)


def test_with_the_test_split_validating_the_columns_measured_on_it_say_so():
    """data.val_size 0: the accuracy that picks the champion and the split T is fitted on are the test split's."""
    from softmax_regression.data.splits import validation_split_name
    from softmax_regression.reporting.page import METRIC_LABELS, metric_labels

    assert metric_labels(validation_split_name(5000)) == METRIC_LABELS
    metrics = {"baseline": {"test_accuracy": 0.845, "val_accuracy": 0.845, "temperature": 1.02}}
    cells = parse_cells(metrics_table_html(metrics, metric_labels(validation_split_name(0))))
    assert [text for _, _, text in cells[:4]] == ["model", "test accuracy",
                                                  "test accuracy (validating: data.val_size is 0)",
                                                  "T (fitted on the test split)"]
    assert "| T (fitted on the test split) |" in render_markdown("T", metrics, [], [],
                                                                   metric_labels(validation_split_name(0)))
