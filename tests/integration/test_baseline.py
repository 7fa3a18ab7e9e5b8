"""The baseline's L-BFGS fit on the real data: a fit that stops at its tolerance does not amplify last-bit noise,
and centring the features changes the model only in how fast it is found."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softmax_regression.data.features import scale_pixels
from softmax_regression.data.idx import read_images, read_labels
from softmax_regression.data.splits import Split, make_splits
from softmax_regression.models.baseline import Fitted, fit_logistic_regression
from softmax_regression.params import load_params
from support import PROJECT_ROOT

DEFAULTS = load_params(PROJECT_ROOT / "params.yaml")["baseline"]


@pytest.fixture(scope="module")
def splits(system_data_dir):
    def split(prefix: str) -> Split:
        return Split(read_images(system_data_dir / f"{prefix}-images-idx3-ubyte.gz"),
                     read_labels(system_data_dir / f"{prefix}-labels-idx1-ubyte.gz"))

    return make_splits(split("train"), split("t10k"), val_size=5000, seed=0)


def correct_on(test, fitted) -> int:
    """How many test images the fitted model classifies right (counted, so no float rounding enters)."""
    logits = Fitted.from_sklearn(fitted)(scale_pixels(test.images))
    return int((logits.argmax(dim=1).numpy() == test.labels).sum())


def fit(features: np.ndarray, labels: np.ndarray):
    return fit_logistic_regression(features, labels, C=DEFAULTS["C"], max_iter=DEFAULTS["max_iter"],
                                   tol=DEFAULTS["tol"])


def test_inputs_that_differ_in_the_last_bit_give_the_same_test_accuracy(splits):
    """One pixel one ulp up, then every non-zero pixel one ulp up (as another CPU's rounding might leave
    them): the default fit's test accuracy moves by at most 0.0005 (5 of the 10,000 test images)."""
    train, test = splits["train"], splits["test"]
    X = scale_pixels(train.images).numpy()
    one_pixel = X.copy()
    row, col = np.argwhere(X > 0)[0]
    one_pixel[row, col] = np.nextafter(X[row, col], np.float32(2))
    every_pixel = X.copy()
    nonzero = X > 0
    every_pixel[nonzero] = np.nextafter(X[nonzero], np.float32(2))
    reference = fit(X, train.labels)
    assert reference.n_iter_.max() < DEFAULTS["max_iter"], "the default fit should stop at its tolerance"
    base = correct_on(test, reference)
    assert base > 0.84 * len(test.labels)  # the linear model solved properly: the Fashion-MNIST paper's 0.842
    for perturbed in (one_pixel, every_pixel):
        assert abs(correct_on(test, fit(perturbed, train.labels)) - base) <= 5


def test_the_centred_fit_is_the_uncentred_model_and_takes_raw_pixels(splits):
    """Centring changes how fast the optimum is found, not the optimum: fitted to convergence on a subset,
    the centred fit (centring folded into the intercept) and scikit-learn's own fit on the raw pixels give
    the same probabilities for pixels in [0, 1] as they are."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    train, test = splits["train"], splits["test"]
    X, y = scale_pixels(train.images[:2000]).numpy(), train.labels[:2000]
    centred = fit_logistic_regression(X, y, C=0.1, max_iter=5000, tol=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = LogisticRegression(C=0.1, max_iter=5000, tol=1e-7).fit(X, y)
    pixels = scale_pixels(test.images[:500])
    expected = torch.from_numpy(plain.predict_proba(pixels.numpy().astype(np.float64))).float()
    got = torch.softmax(Fitted.from_sklearn(centred)(pixels), dim=1)
    # Both stop a little short of the optimum (L-BFGS's own function-decrease test); an intercept without
    # the fold would be off by the mean pixel times W, several units of logit.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-2)
