"""The quality gate that decides whether a new version becomes `production`."""

from __future__ import annotations

import pytest

from pipeline.params import RegisterParams
from pipeline.register import decide, describe

GATE = RegisterParams(
    run_info="r.json",
    onnx_path="model.onnx",
    metrics="m.json",
    decision="d.json",
    min_test_accuracy=0.99,
    min_seed_accuracy=1.0,
    min_real_pictures_accuracy=0.9,
)


@pytest.mark.parametrize(
    ("test_accuracy", "seed_accuracy", "real", "incumbent", "promote", "reason"),
    [
        (0.995, 1.0, 0.95, None, True, "nothing is in production"),
        (0.985, 1.0, 0.95, None, False, "< 0.99"),
        (0.995, 2 / 3, 0.95, None, False, "seed-image accuracy"),
        (0.995, 1.0, 0.85, None, False, "real-pictures accuracy 0.850 < 0.9"),
        (0.995, 1.0, 0.95, 0.997, False, "worse than production"),
        (0.997, 1.0, 0.95, 0.997, True, "≥ production"),
        (0.998, 1.0, 0.95, 0.997, True, "≥ production"),
    ],
)
def test_gate(test_accuracy, seed_accuracy, real, incumbent, promote, reason) -> None:
    metrics = {
        "test_accuracy": test_accuracy,
        "seed_accuracy": seed_accuracy,
        "real_pictures_accuracy": real,
    }
    decision = decide(metrics, incumbent, GATE)
    assert decision.promote is promote
    assert reason in decision.reason


def test_version_description_carries_metrics_data_version_and_decision() -> None:
    metrics = {"test_accuracy": 0.9973, "test_errors": 27, "test_ece": 0.0012,
               "test_ece_uncalibrated": 0.0741, "real_pictures_accuracy": 0.912}  # fmt: skip
    text = describe(metrics, "d41d8cd9", decide(metrics | {"seed_accuracy": 1.0}, None, GATE))
    assert "promoted to production" in text and "nothing is in production" in text
    assert "0.9973 (27 errors)" in text and "0.0012 (0.0741)" in text and "0.912" in text
    assert "`d41d8cd9`" in text
