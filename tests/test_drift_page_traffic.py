"""The drift check on page-drawn digits: the MNIST-like validation split is the wrong reference,
the traffic before the window the right one; the shifts fire against either."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_core.classifier import DigitClassifier
from pipeline.data.datasets import split_path
from pipeline.drift.check import scored
from pipeline.drift.page_traffic import SHIFTS, drawn_digits, firing_rates
from pipeline.params import load_params
from tests.conftest import PROJECT_ROOT


def test_the_default_reference_is_the_traffic_before_the_window() -> None:
    assert load_params(PROJECT_ROOT / "params.yaml").drift.reference == "traffic"


def test_drawn_digits_are_the_pages_strokes_as_the_api_sees_them() -> None:
    pixels, labels = drawn_digits(50, seed=3)
    assert pixels.shape[1:] == (28, 28) and pixels.dtype == np.uint8
    assert len(pixels) == len(labels) >= 45 and set(labels) <= set(range(10))
    again, _ = drawn_digits(50, seed=3)
    assert np.array_equal(pixels, again)  # the same seed, the same traffic


@pytest.mark.slow
def test_ordinary_drawn_traffic_alarms_against_mnist_but_not_against_traffic(
    trained_registry: dict[str, str],
) -> None:
    root = Path(trained_registry["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent
    classifier = DigitClassifier(root / "models/model.onnx")
    params = load_params(root / "params.yaml").drift
    with np.load(split_path(root / params.data_dir, "val")) as val:
        validation = scored(classifier, val["images"])
    rates = firing_rates(classifier, validation, drawn_digits(1500, seed=4), window=200,
                         trials=20, alpha=0.05, seed=0)  # fmt: skip
    assert rates["validation"]["unshifted"] >= 0.9, rates
    assert rates["traffic"]["unshifted"] <= 0.15, rates
    for shift in SHIFTS:
        assert rates["traffic"][shift] >= 0.9, (shift, rates)
