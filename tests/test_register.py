"""The quality gate that decides whether a new version becomes `production`."""

from __future__ import annotations

import pytest

from pipeline.params import RegisterParams
from pipeline.register import decide

GATE = RegisterParams(
    run_info="r.json",
    onnx_path="model.onnx",
    metrics="m.json",
    decision="d.json",
    min_test_accuracy=0.99,
    min_seed_accuracy=1.0,
)


@pytest.mark.parametrize(
    ("test_accuracy", "seed_accuracy", "incumbent", "promote", "reason"),
    [
        (0.995, 1.0, None, True, "nothing is in production"),
        (0.985, 1.0, None, False, "< 0.99"),
        (0.995, 2 / 3, None, False, "seed-image accuracy"),
        (0.995, 1.0, 0.997, False, "worse than production"),
        (0.997, 1.0, 0.997, True, "≥ production"),
        (0.998, 1.0, 0.997, True, "≥ production"),
    ],
)
def test_gate(test_accuracy, seed_accuracy, incumbent, promote, reason) -> None:
    decision = decide(test_accuracy, seed_accuracy, incumbent, GATE)
    assert decision.promote is promote
    assert reason in decision.reason
