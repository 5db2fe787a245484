"""Temperature scaling, expected calibration error and the `uncertain` threshold."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training import calibration


def sampled_logits(temperature: float, count: int = 20_000, seed: int = 0):
    """Logits whose softmax is calibrated, then multiplied by `temperature`: labels are drawn
    from softmax(base), so softmax(logits / temperature) is the true distribution."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 3, size=(count, 10))
    probabilities = calibration.probabilities(base)
    labels = np.array([rng.choice(10, p=row) for row in probabilities])
    return base * temperature, labels


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_temperature_undoes_a_scaling_of_calibrated_logits(scale: float) -> None:
    logits, labels = sampled_logits(scale)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(scale, rel=0.05)


def test_ece_is_small_when_calibrated_and_large_when_overconfident() -> None:
    logits, labels = sampled_logits(1.0)
    calibrated = calibration.expected_calibration_error(calibration.probabilities(logits), labels)
    overconfident = calibration.expected_calibration_error(
        calibration.probabilities(logits * 3), labels
    )
    assert calibrated < 0.02 < 0.1 < overconfident


def test_reliability_bins_count_every_prediction_once() -> None:
    probabilities = np.array([[0.2] + [0.8 / 9] * 9, [1.0] + [0.0] * 9, [0.6, 0.4] + [0] * 8])
    labels = np.array([0, 0, 1])
    rows = calibration.reliability(probabilities, labels, bins=5)
    assert sum(row.count for row in rows) == 3
    # (0.0, 0.2] holds 0.2, (0.4, 0.6] holds 0.6 (wrong), (0.8, 1.0] holds 1.0 (right).
    filled = [(round(row.upper, 6), row.count, row.accuracy) for row in rows if row.count]
    assert filled == [(0.2, 1, 1.0), (0.6, 1, 0.0), (1.0, 1, 1.0)]
    # ECE = 1/3 * (|1 - 0.2| + |0 - 0.6| + |1 - 1|)
    assert calibration.expected_calibration_error(probabilities, labels, bins=5) == pytest.approx(
        (0.8 + 0.6) / 3
    )


def test_uncertain_threshold_flags_the_requested_share() -> None:
    logits, _ = sampled_logits(1.0)
    probabilities = calibration.probabilities(logits)
    threshold = calibration.uncertain_threshold(probabilities, 0.05)
    assert (probabilities.max(axis=1) < threshold).mean() == pytest.approx(0.05, abs=0.002)
