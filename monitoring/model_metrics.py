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
  (the writer falls behind), `store_error` (the store is down) or `worker_died` (queued in a
  worker that was killed before its writer wrote them: counted by the supervisor).
- `mnist_prediction_log_queued`: predictions waiting in the live workers' queues.

Shadow scoring by the `challenger` version (`serving.shadow`), counted by each worker:
- `mnist_shadow_comparisons_total{outcome}`: answers the challenger also gave, `outcome`
  `agree` (same digit as production) or `disagree`; the agreement share is `agree` over both.
- `mnist_shadow_disagreements_total{production, challenger}`: the disagreements by each side's
  digit.
- `mnist_shadow_uncertain_total{side}`: of those answers, the ones `production` or the
  `challenger` flagged `uncertain`; each side's share is this over the comparisons.
- `mnist_shadow_dropped_total{reason}`: shadow work not done, `reason` `queue_full` (the
  challenger falls behind), `error` (it failed to answer), `stale` (the alias moved away, or to
  production's version, before the work was done), `shutdown` (still queued when the worker
  stopped), or `not_logged` (compared, but the answer did not reach the store).
- `mnist_shadow_version{name, alias}`: the version the challenger alias names and the worker
  scores with (0 when none).

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

import functools
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # SQLAlchemy: imported only once the store is opened
    from monitoring.store import Store

log = logging.getLogger(__name__)

DROP_REASONS = ("queue_full", "store_error", "worker_died")
SHADOW_OUTCOMES = ("agree", "disagree")
SHADOW_SIDES = ("production", "challenger")
SHADOW_DROP_REASONS = ("queue_full", "error", "stale", "shutdown", "not_logged")
QUEUED = "mnist_prediction_log_queued"
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1)


class ShadowMetrics:
    """The challenger's comparisons with production (see the module's docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=registry)

        self.comparisons = counter(
            "mnist_shadow_comparisons", "Challenger answers, by agreement with production's",
            "outcome",
        )  # fmt: skip
        self.disagreements = counter(
            "mnist_shadow_disagreements", "Challenger answers that differ, by each side's digit",
            "production", "challenger",
        )  # fmt: skip
        self.uncertain = counter(
            "mnist_shadow_uncertain", "Compared answers flagged uncertain, by side", "side"
        )
        self.dropped = counter(
            "mnist_shadow_dropped", "Shadow work not done or not logged, by reason", "reason"
        )
        self.version = Gauge(
            "mnist_shadow_version",
            "Registry version the challenger alias names, scored in the shadow",
            ["name", "alias"],
            registry=registry,
            multiprocess_mode="livemostrecent",  # as `mnist_model_version`
        )
        # Known label values start at 0 (see `MonitoringMetrics`): the agreement reads NaN, not
        # "no data", until a challenger answers.
        for outcome in SHADOW_OUTCOMES:
            self.comparisons.labels(outcome)
        for side in SHADOW_SIDES:
            self.uncertain.labels(side)
        for reason in SHADOW_DROP_REASONS:
            self.dropped.labels(reason)


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
        for reason in DROP_REASONS:
            self.log_dropped.labels(reason)
        self.log_queued = Gauge(
            QUEUED,
            "Predictions waiting in the writers' queues",
            registry=registry,
            multiprocess_mode="livesum",  # a dead worker's leave with it (see below)
        )
        self.shadow = ShadowMetrics(registry)

    def observe(self, model_version: str, digit: int, confidence: float, uncertain: bool,
                source: str) -> None:  # fmt: skip
        self.predictions.labels(model_version, str(digit), source).inc()
        self.confidence.labels(model_version).observe(confidence)
        flagged = self.uncertain.labels(model_version)  # 0 until the first uncertain answer
        if uncertain:
            flagged.inc()


@functools.cache
def _dropped_by_dead_workers() -> Counter:
    # The supervisor's own counter: in multiprocess mode a file of its own that every worker's
    # scrape sums with theirs.
    counter = Counter("mnist_prediction_log_dropped", "Predictions not logged", ["reason"],
                      registry=CollectorRegistry())  # fmt: skip
    return counter.labels("worker_died")


def count_unwritten_of_dead_worker(directory: Path, pid: int) -> int:
    """Count and log the predictions a worker that ended (`pid`) still held in its queue, read
    from its gauge file in the multiprocess `directory` before that file is removed. A worker
    that stopped on SIGTERM flushed its queue (0); one that was killed lost them."""
    from prometheus_client.multiprocess import MultiProcessCollector

    found = directory / f"gauge_livesum_{pid}.db"
    if not found.exists():
        return 0
    with tempfile.TemporaryDirectory() as alone:  # the collector reads a whole directory
        shutil.copy(found, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=alone)
        unwritten = int(registry.get_sample_value(QUEUED) or 0)
    if unwritten > 0:
        log.error(
            "A worker (pid %d) ended with %d predictions not yet written to the store: they are "
            'lost, and counted in mnist_prediction_log_dropped_total{reason="worker_died"}',
            pid,
            unwritten,
        )
        _dropped_by_dead_workers().inc(unwritten)
    return unwritten


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
