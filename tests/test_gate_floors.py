"""The gate's floors as params.yaml sets them: none is a placeholder, a model below any one of
them is refused, and their validation figures come from validation data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_core.classifier import DigitClassifier
from pipeline.params import load_params
from pipeline.registry.lineage import Lineage
from pipeline.registry.policy import GATE, decide
from tests.conftest import PROJECT_ROOT

FLOORS = load_params(PROJECT_ROOT / "params.yaml").registration
CLEAN_MAIN = Lineage("abc123", False, "main", None, "d41d8cd9", "0f" * 32)
# A model at the floors: the weakest that passes.
AT_THE_FLOORS = {metric: float(getattr(FLOORS, parameter)) for metric, parameter in GATE.items()}


def test_no_floor_is_a_placeholder() -> None:
    assert all(value > 0 for value in AT_THE_FLOORS.values()), AT_THE_FLOORS


def test_a_model_at_the_floors_passes() -> None:
    decision = decide(AT_THE_FLOORS, CLEAN_MAIN, None, FLOORS, has_incumbent=False)
    assert decision.promote, decision.reason


@pytest.mark.parametrize("metric", sorted(GATE))
def test_a_model_below_any_one_floor_is_refused(metric: str) -> None:
    floor = AT_THE_FLOORS[metric]
    below = floor - 1 / 3 if metric == "seed_accuracy" else floor - 0.001  # one drawing of three
    metrics = AT_THE_FLOORS | {metric: below}
    decision = decide(metrics, CLEAN_MAIN, None, FLOORS, has_incumbent=False)
    assert decision.action == "none"
    assert decision.reason == f"{metric} {below:.4f} < {floor}"


def test_the_figures_behind_the_floors_are_validation_figures(
    trained_registry: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the tiny trained pipeline, recomputed here from the validation files themselves."""
    from pipeline.registry.gate_figures import validation_figures

    root = Path(trained_registry["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent
    monkeypatch.chdir(root)
    params = load_params(root / "params.yaml")
    figures = validation_figures(params)

    classifier = DigitClassifier(params.evaluate.onnx_path)
    with np.load(params.evaluate.data_dir / "val.npz") as val:
        probabilities = classifier.predict_proba(val["images"])
        accuracy = (probabilities.argmax(axis=1) == val["labels"]).mean()
    assert figures["test_accuracy"] == pytest.approx(accuracy)
    with np.load(params.non_digits.out_dir / "val.npz") as non_digits:
        held = np.isin(non_digits["families"], non_digits["held_out"])
        confidence = classifier.predict_proba(non_digits["images"][held]).max(axis=1)
        refused = sum(
            int(count)
            for family, count in zip(
                non_digits["rejected_families"], non_digits["rejected_counts"], strict=True
            )
            if family in non_digits["held_out"]
        )
    flagged = ((confidence < classifier.metadata.uncertain_below).sum() + refused) / (
        len(confidence) + refused
    )
    assert figures["held_out_non_digits_flagged"] == pytest.approx(flagged)
    assert 0 <= figures["real_pictures_accuracy"] <= 1
