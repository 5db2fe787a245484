"""The Prometheus metrics of predictions, feedback and drift, per model version.

Names (fixed: the Grafana dashboard and the alert rules query them):

Counted by each worker (summed across workers in multiprocess mode):
- `mnist_version_predictions_total{model_version, digit, source}`: answers by predicted digit.
- `mnist_prediction_confidence{model_version}`: histogram of the top-class probability.
- `mnist_uncertain_predictions_total{model_version}`: answers flagged `uncertain`; their share is
  this over `sum by (model_version) (mnist_version_predictions_total)`.
- `mnist_feedback_total{model_version, predicted, corrected}`: feedback received, `corrected`
  being the user's label ("0".."9" or "not_a_digit"); where it equals `predicted` the user
  confirmed the answer.
- `mnist_prediction_log_written_total`: predictions written to the store.
- `mnist_prediction_log_dropped_total{reason}`: predictions not logged, `reason` `queue_full`
  (the writer falls behind) or `store_error` (the store is down).

Read from the store at scrape time (the same for every worker, so no sum is needed):
- `mnist_feedback_accuracy{model_version}`: share of feedback (rejected excluded) that confirmed
  the prediction; `mnist_feedback_answers{model_version}` how many answers that share is over.
- `mnist_drift_score{test}`: the latest drift check's scores; `mnist_drift_alarm{test}` 1 where
  it raised an alarm; `mnist_drift_window_size` and `mnist_drift_check_timestamp_seconds`.

The API's existing metrics (`serving/metrics.py`) keep their names: `mnist_http_requests_total`,
`mnist_http_request_duration_seconds`, `mnist_predictions_total{digit, uncertain}`,
`mnist_model_version`, `mnist_inference_batch_size`, `mnist_batch_queue_wait_seconds`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitoring.store import Store

log = logging.getLogger(__name__)

CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1)


class MonitoringMetrics:
    """The counters and histograms the API updates, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.predictions = Counter(
            "mnist_version_predictions",
            "Answers by model version, predicted digit and source",
            ["model_version", "digit", "source"],
            registry=registry,
        )
        self.confidence = Histogram(
            "mnist_prediction_confidence",
            "Top-class probability of each answer",
            ["model_version"],
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.uncertain = Counter(
            "mnist_uncertain_predictions",
            "Answers flagged uncertain",
            ["model_version"],
            registry=registry,
        )
        self.feedback = Counter(
            "mnist_feedback",
            "User feedback by the predicted digit and the user's label",
            ["model_version", "predicted", "corrected"],
            registry=registry,
        )
        self.log_written = Counter(
            "mnist_prediction_log_written", "Predictions written to the store", registry=registry
        )
        self.log_dropped = Counter(
            "mnist_prediction_log_dropped",
            "Predictions not logged (queue_full, store_error)",
            ["reason"],
            registry=registry,
        )
        # Known label values start at 0, so that a rate or a share reads 0 rather than "no
        # data" until the first event (Prometheus' advice on labels).
        for reason in ("queue_full", "store_error"):
            self.log_dropped.labels(reason)

    def observe(self, model_version: str, digit: int, confidence: float, uncertain: bool,
                source: str) -> None:  # fmt: skip
        self.predictions.labels(model_version, str(digit), source).inc()
        self.confidence.labels(model_version).observe(confidence)
        flagged = self.uncertain.labels(model_version)  # 0 until the first uncertain answer
        if uncertain:
            flagged.inc()


class StoreCollector(Collector):
    """Gauges read from the store at scrape time: feedback accuracy per version and the latest
    drift check. A store that cannot be read leaves them out of the scrape (and logs why)
    rather than failing it."""

    def __init__(self, store: Callable[[], Store | None]) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = self.store()
        if store is None:
            return
        try:
            accuracy = store.feedback_accuracy()
            drift = store.latest_drift()
        except Exception as error:  # a scrape must not fail because the store is down
            log.warning("monitoring gauges left out: the store cannot be read (%s)", error)
            return
        share = GaugeMetricFamily(
            "mnist_feedback_accuracy",
            "Share of feedback confirming the prediction (rejected excluded)",
            labels=["model_version"],
        )
        answers = GaugeMetricFamily(
            "mnist_feedback_answers", "Feedback the accuracy is over", labels=["model_version"]
        )
        for version, (right, total) in sorted(accuracy.items()):
            share.add_metric([version], right / total if total else float("nan"))
            answers.add_metric([version], total)
        yield share
        yield answers
        score = GaugeMetricFamily(
            "mnist_drift_score", "Latest drift check's score per test", labels=["test"]
        )
        alarm = GaugeMetricFamily(
            "mnist_drift_alarm", "1 where the latest drift check raised an alarm", labels=["test"]
        )
        if drift is not None:
            for name, value in sorted(drift.scores.items()):
                score.add_metric([name], value)
                alarm.add_metric([name], float(name in drift.alarms))
            yield GaugeMetricFamily(
                "mnist_drift_window_size",
                "Predictions in the latest drift check's window",
                value=drift.window_size,
            )
            yield GaugeMetricFamily(
                "mnist_drift_check_timestamp_seconds",
                "When the latest drift check ran (Unix time)",
                value=drift.created_at.timestamp(),
            )
        yield score
        yield alarm
