"""The chapter's worked examples, as the report shows them: computed, and right."""

import json

import numpy as np
import pytest
import torch

from softmax_regression.evaluation.worked import (
    cross_entropy_by_indexing,
    gradient_check,
    one_hot,
    softmax_example,
    worked_examples,
)
from softmax_regression.reporting.page import worked_html
from softmax_regression.training.loop import initial_weights


def test_one_hot_puts_a_single_one_at_each_label():
    encoded = np.array(one_hot(np.array([9, 2, 1])))
    assert encoded.shape == (3, 10) and (encoded.sum(axis=1) == 1).all()
    assert list(encoded.argmax(axis=1)) == [9, 2, 1]


def test_softmax_example_is_positive_and_sums_to_one():
    example = softmax_example()
    P = np.array(example["softmax"])
    assert P.shape == (2, 5) and (P > 0).all() and example["all_positive"]
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=0, atol=1e-12)
    X = np.array(example["X"])
    np.testing.assert_allclose(P, np.exp(X) / np.exp(X).sum(axis=1, keepdims=True), rtol=0, atol=1e-12)


def test_cross_entropy_by_indexing_picks_the_chapters_probabilities():
    example = cross_entropy_by_indexing()
    assert example["picked"] == pytest.approx([0.1, 0.5])
    assert example["losses"] == pytest.approx([-np.log(0.1), -np.log(0.5)])


def test_gradient_check_agrees_with_autograd():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, 64)
    W = initial_weights(784, 10, 0.5, torch.Generator().manual_seed(0))
    check = gradient_check(W, torch.zeros(10), images, labels)
    assert check["batch"] == 64 and check["max_abs_difference"] < 1e-12 < check["largest_gradient"]


@pytest.mark.parametrize("mode", ["global", "per_pixel"])
def test_gradient_check_runs_on_the_models_own_logits_when_inputs_are_standardized(mode):
    """With data.normalize the model sees standardized pixels: the example's logits must be those, not
    ``pixels / 255 @ W + b`` (which the same weights would turn into other, meaningless logits)."""
    from softmax_regression.data.features import Standardization, features
    from softmax_regression.models.scratch import softmax

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (64, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, 64)
    W = initial_weights(784, 10, 0.02, torch.Generator().manual_seed(1))  # unsaturated: gradients below 1
    b = torch.linspace(-1, 1, 10)
    standardization = Standardization.fit(images, mode)
    check = gradient_check(W, b, images, labels, standardization)
    logits = (features(images, standardization).double() @ W.double() + b.double())
    formula = softmax(logits) - torch.nn.functional.one_hot(torch.from_numpy(labels), 10).double()
    assert check["largest_gradient"] == pytest.approx(float(formula.abs().max()), rel=1e-6)
    assert check["max_abs_difference"] < 1e-12
    unstandardized = gradient_check(W, b, images, labels)
    assert unstandardized["largest_gradient"] != pytest.approx(check["largest_gradient"], rel=1e-3)


def test_the_section_renders_every_example_from_json():
    rng = np.random.default_rng(1)
    worked = json.loads(json.dumps(worked_examples(
        initial_weights(784, 10, 0.01, torch.Generator().manual_seed(0)), torch.zeros(10),
        rng.integers(0, 256, (300, 784), dtype=np.uint8), rng.integers(0, 10, 300))))
    page = worked_html(worked)
    for fragment in ("One-hot labels", "Softmax on a small example", "<b>0.1, 0.5</b>", "2.3026, 0.6931",
                     "softmax minus one-hot", "256 test images"):
        assert fragment in page, fragment
