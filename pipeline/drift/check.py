"""The drift check: do the newest logged predictions still look like the reference?

The window is the newest `window_size` predictions in the API's store (MNIST_STORE_URL). The
reference is the validation split scored by the served model's ONNX file through the API's own
inference code (the split is already in the form `to_mnist` gives every picture, so both sides
went through the same preprocessing), or the `window_size` predictions logged before the window.
The tests are `pipeline.drift.statistics`. Writes an HTML report and a JSON summary (a DVC metrics
file), records the scores in the store for the API's gauges, and exits 1 when a test fires.
"""

from __future__ import annotations

import logging

import numpy as np

from mnist_core.classifier import DigitClassifier
from monitoring.records import PredictionWindow
from monitoring.store import Store
from pipeline.data.datasets import load_split
from pipeline.drift import html_report as drift_report
from pipeline.drift.statistics import (
    DriftResult,
    ScoredImages,
    Window,
    compare,
    false_alarm_rate,
    subset,
)
from pipeline.io import write_json
from pipeline.params import DriftParams

log = logging.getLogger(__name__)

DRIFT_EXIT_CODE = 1


def scored(classifier: DigitClassifier, pixels: np.ndarray) -> ScoredImages:
    """28×28 inputs through the model, flagged `uncertain` by the model's own threshold."""
    probabilities = classifier.predict_proba(pixels)
    uncertain = probabilities.max(axis=1) < classifier.metadata.uncertain_below
    return ScoredImages(pixels, probabilities, uncertain)


def score_split(params: DriftParams, classifier: DigitClassifier, split: str) -> ScoredImages:
    """A processed split through the model, flagged `uncertain` by the model's own threshold."""
    return scored(classifier, load_split(params.data_dir, split)[0].numpy())


def window_span(window: PredictionWindow) -> dict[str, object]:
    """When the window's predictions were made and by which versions."""
    return {
        "first": str(window.created_at[0]),
        "last": str(window.created_at[-1]),
        "model_versions": sorted(set(window.model_versions.tolist())),
    }


def summary(result: DriftResult, reference: str, window: PredictionWindow) -> dict[str, object]:
    """The JSON summary (and DVC metrics) of one check."""
    return {
        "status": "drift" if result.drifted else "no_drift",
        "drifted": result.drifted,
        "reference": reference,
        "reference_size": result.reference_size,
        "window_size": result.window_size,
        "window": window_span(window),
        "alpha": result.alpha,
        "per_test_threshold": result.alpha / len(result.tests),
        "alarms": result.alarms,
        "tests": {
            test.name: {
                "score": test.statistic_name,
                "value": test.statistic,
                "p_value": test.p_value,
                "alarm": test.alarm,
            }
            for test in result.tests
        },
    }


def windows(params: DriftParams, store: Store) -> tuple[str, Window | None, PredictionWindow]:
    """(what the reference is, the reference or None for the validation split, the window)."""
    if params.reference == "validation":
        window = store.recent_predictions(params.window_size, params.model_version)
        return f"the validation split scored by {params.onnx_path}", None, window
    logged = store.recent_predictions(2 * params.window_size, params.model_version)
    older = slice(0, max(0, len(logged) - params.window_size))
    newer = slice(older.stop, None)
    return "the traffic logged before the window", subset(logged, older), subset(logged, newer)


def run(params: DriftParams, store: Store) -> int:
    """The whole check: report and summary written, scores recorded; returns the exit code."""
    reference_name, reference, window = windows(params, store)
    smallest = min(len(window), len(reference.pixels) if reference is not None else len(window))
    if smallest < params.min_window_size:
        note = f"too little traffic: {smallest} predictions, {params.min_window_size} needed"
        log.warning("No verdict: %s", note)
        write_json(params.metrics, {"status": "not_enough_traffic", "drifted": False})
        drift_report.write_without_verdict(params.report, note)
        return 0
    unshifted = None
    if reference is None:
        classifier = DigitClassifier(params.onnx_path)
        reference = score_split(params, classifier, "val")
        if params.false_alarm_windows:
            unshifted = score_split(params, classifier, "test")
    result = compare(reference, window, params.alpha)
    report = summary(result, reference_name, window)
    if unshifted is not None:
        rates = false_alarm_rate(
            reference, unshifted, len(window), params.false_alarm_windows, params.alpha,
            params.seed,
        )  # fmt: skip
        report["false_alarms"] = {"windows": params.false_alarm_windows, "rate": rates}
    write_json(params.metrics, report)
    drift_report.write(params.report, report, reference, window)
    store.record_drift(result.window_size, reference_name, result.scores, result.alarms)
    log.info(
        "%s: %s (window of %d, family-wise alpha %.3f)",
        "DRIFT" if result.drifted else "no drift",
        ", ".join(result.alarms) or "no test fired",
        result.window_size,
        result.alpha,
    )
    return DRIFT_EXIT_CODE if result.drifted else 0
