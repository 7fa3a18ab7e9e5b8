"""Calibration measures and temperature scaling: hand-computed cases, a calibrated and an over-confident
synthetic model, and a temperature recovered from synthetic logits."""

from __future__ import annotations

import numpy as np
import pytest

from softmax_regression.data.splits import validation_split_name
from softmax_regression.evaluation import with_temperature
from softmax_regression.evaluation.calibration import (
    binned,
    brier_score,
    calibrate,
    classwise_ece,
    fit_temperature,
    negative_log_likelihood,
    read_reliability_csv,
    reliability,
    reliability_csv,
    verdict,
)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def draw_labels(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from the row's own probabilities: a model calibrated by construction."""
    cumulative = probabilities.cumsum(axis=1)
    return (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1).clip(0, probabilities.shape[1] - 1)


def test_ece_mce_and_brier_by_hand():
    # four images, two bins: confidences 0.3 and 0.4 fall in [0, 0.5), 0.8 and 0.9 in [0.5, 1]
    probabilities = np.array([[0.3, 0.35, 0.35], [0.4, 0.3, 0.3], [0.8, 0.1, 0.1], [0.05, 0.05, 0.9]])
    # argmax: class 1 (0.35 beats 0.3, the first of equals), 0, 0, 2
    labels = np.array([1, 2, 0, 1])
    r = reliability(probabilities, labels, bins=2)
    assert r.counts.tolist() == [2, 2]
    assert r.confidence == pytest.approx([0.375, 0.85])
    assert r.accuracy == pytest.approx([0.5, 0.5])  # right: the first and the third
    # ECE = 2/4 * |0.5 - 0.375| + 2/4 * |0.5 - 0.85| = 0.0625 + 0.175
    assert r.ece() == pytest.approx(0.2375)
    assert r.mce() == pytest.approx(0.35)
    # Brier: per row the squared distance to the one-hot label, then the mean
    rows = [0.3 ** 2 + 0.65 ** 2 + 0.35 ** 2, 0.4 ** 2 + 0.3 ** 2 + 0.7 ** 2, 0.2 ** 2 + 0.1 ** 2 + 0.1 ** 2,
            0.05 ** 2 + 0.95 ** 2 + 0.9 ** 2]
    assert brier_score(probabilities, labels) == pytest.approx(np.mean(rows))
    assert negative_log_likelihood(probabilities, labels) == pytest.approx(
        -np.mean(np.log([0.35, 0.3, 0.8, 0.05])))


def test_bin_edges_belong_to_the_bin_below_and_empty_bins_do_not_count():
    r = binned(np.array([0.0, 0.5, 0.50001, 1.0]), np.array([1, 1, 0, 0]), bins=4)
    assert r.counts.tolist() == [1, 1, 1, 1]  # 0 -> first; 0.5 -> [0.25, 0.5]; 0.50001 -> (0.5, 0.75]; 1 -> last
    r = binned(np.array([0.95, 0.95]), np.array([1, 0]), bins=10)
    assert r.counts.sum() == 2 and np.isnan(r.accuracy[0])
    assert r.ece() == pytest.approx(0.45) and r.mce() == pytest.approx(0.45)


def test_a_calibrated_model_has_an_ece_near_zero_within_the_sampling_bound():
    """Labels drawn from the predicted probabilities. Each bin's gap |acc - conf| is a mean of n_m draws with
    variance at most 1/4, so E|gap| <= 1/(2 sqrt(n_m)); weighted by n_m / n and summed over M bins,
    E[ECE] <= sum_m sqrt(n_m) / (2n) <= sqrt(M / n) / 2 (Cauchy-Schwarz)."""
    rng = np.random.default_rng(0)
    n, bins = 20_000, 15
    probabilities = softmax(rng.normal(0, 2.0, (n, 10)))
    labels = draw_labels(probabilities, rng)
    bound = np.sqrt(bins / n) / 2
    assert reliability(probabilities, labels, bins).ece() < bound
    # sharpened (over-confident) the same model is far off, by more than ten times the bound
    sharp = with_temperature(probabilities, 0.4)
    assert reliability(sharp, labels, bins).ece() > 10 * bound
    assert reliability(sharp, labels, bins).over_confidence() > 0
    assert classwise_ece(probabilities, labels, bins).max() < 2 * np.sqrt(bins / n)


def test_the_fitted_temperature_recovers_the_one_that_made_the_data():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3.0, (20_000, 10))
    for true_t in (0.5, 1.0, 2.5):
        labels = draw_labels(softmax(logits / true_t), rng)
        assert fit_temperature(softmax(logits), labels) == pytest.approx(true_t, rel=0.05)


def test_the_temperature_changes_no_prediction():
    rng = np.random.default_rng(2)
    probabilities = softmax(rng.normal(0, 3.0, (5000, 10)))
    for t in (0.05, 0.3, 1.0, 4.0, 20.0):
        scaled = with_temperature(probabilities, t)
        assert np.array_equal(scaled.argmax(axis=1), probabilities.argmax(axis=1))
        assert np.allclose(scaled.sum(axis=1), 1.0)
    assert np.allclose(with_temperature(probabilities, 1.0), probabilities)


def test_the_temperature_depends_on_the_validation_split_only():
    """calibrate() fits on what it is given as validation: any test split, the same temperature."""
    rng = np.random.default_rng(3)
    val = softmax(rng.normal(0, 3.0, (4000, 10)))
    val_labels = draw_labels(softmax(np.log(val) / 2.0), rng)
    temperatures = set()
    for scale in (0.5, 3.0):
        test = softmax(rng.normal(0, scale, (3000, 10)))
        result = calibrate(test, draw_labels(test, rng), val, val_labels, bins=15)
        temperatures.add(result.temperature)
        assert result.calibrated.counts.sum() == 3000
        assert set(result.summary()) == {"test_ece", "test_mce", "test_brier", "temperature", "test_ece_calibrated"}
    assert len(temperatures) == 1 and temperatures.pop() == pytest.approx(2.0, rel=0.1)


def test_the_reliability_table_reads_back_only_whole():
    """The report's sentence recomputes the ECE from this table: read back, it gives the ECE of the
    calibration it was written from; bins that do not tile 0 to 1, or that count other than the test
    images, are damaged (a table cut short gave the report another ECE than the metrics file's)."""
    rng = np.random.default_rng(3)
    probabilities = softmax(rng.normal(0, 2, (500, 10)))
    labels = draw_labels(probabilities, rng)
    calibration = calibrate(probabilities, labels, probabilities, labels, bins=15)
    text = reliability_csv(calibration)
    before, after = read_reliability_csv(text, images=500)
    assert before.ece() == pytest.approx(calibration.reliability.ece(), abs=1e-6)
    assert after.ece() == pytest.approx(calibration.calibrated.ece(), abs=1e-6)
    lines = text.strip().splitlines()
    for damaged, message in [("\n".join(lines[:6]), "its bins do not tile the confidences from 0 to 1"),
                             (lines[0], "its bins do not tile the confidences from 0 to 1"),
                             ("\n".join(lines[:3] + lines[4:]), "its bins do not tile the confidences from 0 to 1")]:
        with pytest.raises(ValueError, match=message):
            read_reliability_csv(damaged, images=500)
    with pytest.raises(ValueError, match="its bins count 500 images before the temperature and 500 after, not the "
                                         "10000 test images"):
        read_reliability_csv(text, images=10000)
    one_bin = lines[0] + "\n0.000000,1.000000,5,0.9,0.8,4,0.9,0.8\n"
    with pytest.raises(ValueError, match="its bins count 5 images before the temperature and 4 after$"):
        read_reliability_csv(one_bin)


def test_the_verdict_names_the_split_the_temperature_was_fitted_on():
    """With ``data.val_size: 0`` the test split itself fits the temperature: the sentence says so."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    logits = rng.normal(size=(2000, 10))
    logits[np.arange(2000), labels] += 2.0
    probabilities = with_temperature(softmax(logits), 0.5)  # sharpened: over-confident
    before = reliability(probabilities, labels, 15)
    after = reliability(with_temperature(probabilities, 2.0), labels, 15)
    for val_size, split in ((5000, "the validation split"),
                            (0, "the test split itself (data.val_size is 0: no validation split)")):
        assert validation_split_name(val_size) == split
        sentence = verdict("scratch", before, after, 2.0, validation_split_name(val_size))
        assert sentence.startswith("The scratch model is over-confident: its confidence is on average ")
        assert f"; the temperature 2.000, fitted on {split}, brings the test ECE to {after.ece():.4f} " in sentence
