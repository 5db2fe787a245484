"""The drift check: its statistics on hand-made arrays, and the whole check on logged traffic
that a tiny real model answered, shifted (thick strokes, dark-on-light, one digit) or not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage, stats

from mnist_core.classifier import DigitClassifier
from monitoring.records import PredictionRecord, new_prediction_id
from monitoring.store import Store, open_store
from pipeline.data.datasets import save_split
from pipeline.drift.check import DRIFT_EXIT_CODE
from pipeline.drift.statistics import (
    TESTS,
    ScoredImages,
    class_mix_test,
    compare,
    false_alarm_rate,
    input_statistics,
    population_stability_index,
    two_proportion_test,
)
from pipeline.stages import drift
from serving.model_store import read_local_model
from tests.conftest import PROJECT_ROOT, download_production
from tests.synthetic import render_digits

WINDOW = 300


def test_input_statistics_of_a_drawn_box_and_of_a_blank_image() -> None:
    pixels = np.zeros((2, 28, 28), np.uint8)
    pixels[0, 4:24, 10:16] = 255  # 20 rows × 6 columns of ink
    pixels[0, 0, 0] = 40  # below the ink level: background
    values = input_statistics(pixels)
    assert values["ink_share"][0] == pytest.approx(120 / 784)
    assert (values["ink_box_height"][0], values["ink_box_width"][0]) == (20, 6)
    assert (values["ink_box_row"][0], values["ink_box_col"][0]) == (13.5, 12.5)
    assert values["ink_share"][1] == 0 and np.isnan(values["ink_box_height"][1])


def test_psi_and_the_two_proportion_test_against_known_values() -> None:
    assert population_stability_index(np.array([50, 50]), np.array([50, 50])) == 0
    # Shares 0.5/0.5 against 0.9/0.1: 0.4 ln(0.9/0.5) - 0.4 ln(0.1/0.5).
    expected = 0.4 * np.log(0.9 / 0.5) - 0.4 * np.log(0.1 / 0.5)
    assert population_stability_index(np.array([5, 5]), np.array([9, 1])) == pytest.approx(expected)
    reference, window = np.r_[np.ones(30), np.zeros(970)], np.r_[np.ones(60), np.zeros(940)]
    delta, p_value = two_proportion_test(reference.astype(bool), window.astype(bool))
    # The pooled z-test is the 2×2 chi-square test without continuity correction.
    table = [[30, 970], [60, 940]]
    assert delta == pytest.approx(0.03)
    assert p_value == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    assert two_proportion_test(np.zeros(5, bool), np.zeros(9, bool)) == (0.0, 1.0)
    psi, p_mix = class_mix_test(np.repeat(np.arange(10), 50), np.repeat(np.arange(10), 50))
    assert (psi, p_mix) == (0.0, 1.0)


def test_bonferroni_one_test_just_past_alpha_alone_does_not_fire() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (400, 28, 28), dtype=np.uint8)
    probabilities = rng.dirichlet(np.ones(10), 400).astype(np.float32)
    base = ScoredImages(pixels, probabilities, probabilities.max(1) < 0.5)
    # A window whose uncertain share differs with 0.05/8 < p < 0.05.
    flags = base.uncertain.copy()
    flags[np.flatnonzero(~flags)[:14]] = True
    result = compare(base, ScoredImages(pixels, probabilities, flags), alpha=0.05)
    (uncertain,) = [test for test in result.tests if test.name == "uncertain_share"]
    assert 0.05 / len(TESTS) < uncertain.p_value < 0.05
    assert not result.drifted and [test.name for test in result.tests] == list(TESTS)


# --- the check on a tiny real model ---------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(trained_registry: dict[str, str], tmp_path_factory) -> tuple[Path, DigitClassifier]:
    """The tiny production model's ONNX file, and a classifier on it."""
    directory = tmp_path_factory.mktemp("drift-model")
    model = download_production(trained_registry["MLFLOW_TRACKING_URI"], directory / "model")
    path = directory / "model.onnx"
    path.write_bytes(read_local_model(model)[0])
    return path, DigitClassifier(path)


def scored(classifier: DigitClassifier, pixels: np.ndarray) -> ScoredImages:
    probabilities = classifier.predict_proba(pixels)
    uncertain = probabilities.max(1) < classifier.metadata.uncertain_below
    return ScoredImages(pixels, probabilities, uncertain)


def thick(pixels: np.ndarray) -> np.ndarray:
    """Every stroke dilated by a 3×3 square: a thick pen."""
    return ndimage.grey_dilation(pixels, size=(1, 3, 3))


def dark_on_light(pixels: np.ndarray) -> np.ndarray:
    """Dark ink on a light page sent as is, not inverted as MNIST has it (what a
    `/predict/pixels` client might do)."""
    return 255 - pixels


SHIFTS = {
    "thick strokes": (lambda pixels, labels: thick(pixels), "ink_share_ks"),
    "dark on light": (lambda pixels, labels: dark_on_light(pixels), "ink_share_ks"),
    "only sevens": (lambda pixels, labels: pixels[labels == 7], "class_mix_psi"),
}


@pytest.fixture(scope="module")
def digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reference and traffic drawn alike (the same generator, other seeds)."""
    return {
        "val": render_digits(600, seed=11),
        "test": render_digits(1000, seed=12),
        "traffic": render_digits(3000, seed=13),
    }


def test_unshifted_windows_rarely_fire(classifier, digits) -> None:
    _, model = classifier
    reference = scored(model, digits["val"][0])
    rates = false_alarm_rate(reference, scored(model, digits["traffic"][0]), WINDOW, 50, 0.05, 0)
    assert rates["any"] <= 0.1, rates


@pytest.mark.parametrize("shift", SHIFTS)
def test_shifted_windows_fire_the_right_test(classifier, digits, shift: str) -> None:
    _, model = classifier
    reference = scored(model, digits["val"][0])
    transform, expected_alarm = SHIFTS[shift]
    pixels = transform(*digits["traffic"])[:WINDOW]
    result = compare(reference, scored(model, pixels), alpha=0.05)
    assert result.drifted and expected_alarm in result.alarms, result.scores


def log_traffic(store: Store, model: DigitClassifier, pixels: np.ndarray) -> None:
    """Logged as the API logs a `/predict/pixels` answer."""
    window = scored(model, pixels)
    store.add_predictions(
        PredictionRecord(
            id=new_prediction_id(),
            model_version="1",
            source="pixels",
            pixels=image,
            digit=int(probabilities.argmax()),
            probabilities=probabilities.tolist(),
            uncertain=bool(flag),
        )
        for image, probabilities, flag in zip(
            window.pixels, window.probabilities, window.uncertain, strict=True
        )
    )


@pytest.fixture
def project(tmp_path: Path, classifier, digits, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The drift stage's inputs in `tmp_path`: processed splits, the model, an empty store."""
    onnx_path, _ = classifier
    (tmp_path / "data").mkdir()
    for split in ("val", "test"):
        save_split(tmp_path / "data", split, *digits[split])
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["drift"].update(
        data_dir=str(tmp_path / "data"),
        onnx_path=str(onnx_path),
        report=str(tmp_path / "reports" / "drift.html"),
        metrics=str(tmp_path / "metrics" / "drift.json"),
        window_size=WINDOW,
        false_alarm_windows=20,
        reference="validation",  # the default is `traffic`; these tests compare with both
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("MNIST_STORE_URL", f"sqlite:///{tmp_path / 'predictions.db'}")
    return tmp_path


def run_check(project: Path, *overrides: str) -> tuple[int, dict, str]:
    argv = ["--params", str(project / "params.yaml")]
    for override in overrides:
        argv += ["-S", override]
    code = drift.main(argv)
    summary = json.loads((project / "metrics" / "drift.json").read_text())
    return code, summary, (project / "reports" / "drift.html").read_text()


def test_the_check_fires_on_thick_strokes_and_not_on_unshifted_traffic(project, classifier):
    _, model = classifier
    pixels, _ = render_digits(2 * WINDOW, seed=21)
    store = open_store(f"sqlite:///{project / 'predictions.db'}")
    try:
        log_traffic(store, model, pixels[:WINDOW])
        code, summary, report = run_check(project)
        assert (code, summary["status"], summary["alarms"]) == (0, "no_drift", [])
        assert summary["window_size"] == WINDOW and "false_alarms" in summary
        assert store.latest_drift().alarms == []

        log_traffic(store, model, thick(pixels[WINDOW:]))  # the newest window: a thick pen
        code, summary, report = run_check(project)
        assert (code, summary["status"]) == (DRIFT_EXIT_CODE, "drift")
        assert "ink_share_ks" in summary["alarms"]
        latest = store.latest_drift()
        assert latest.alarms == summary["alarms"] and latest.window_size == WINDOW
        assert latest.scores["ink_share_ks"] == summary["tests"]["ink_share"]["value"]
        assert "DRIFT" in report and report.count("data:image/png;base64,") == 3

        # Against the traffic before it, the thick window stands out as well.
        code, summary, _ = run_check(project, "drift.reference=traffic")
        assert code == DRIFT_EXIT_CODE and summary["reference_size"] == WINDOW
        assert "false_alarms" not in summary
    finally:
        store.close()


def test_too_little_traffic_gives_no_verdict(project, classifier) -> None:
    code, summary, report = run_check(project)
    assert (code, summary["status"]) == (0, "not_enough_traffic")
    assert "no verdict" in report
