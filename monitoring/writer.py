"""The prediction log's writer: predictions queue up in memory and a background thread writes
them to the store in batches, so that no request waits for a database.

When the queue is full or the store fails, predictions are dropped and counted, never delayed:
answering comes first. The same thread prunes the store to its retention limits.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from monitoring.model_metrics import MonitoringMetrics
from monitoring.records import PredictionRecord, ShadowAnswer, utc_now
from monitoring.settings import MonitoringSettings

if TYPE_CHECKING:  # SQLAlchemy: imported by the first `store()`, off the request path
    from monitoring.store import Store

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 60.0
REOPEN_AFTER_SECONDS = 5.0


def take(waiting: queue.Queue, most: int) -> list:
    """Up to `most` items from `waiting`, without waiting for any."""
    taken = []
    while len(taken) < most:
        try:
            taken.append(waiting.get_nowait())
        except queue.Empty:
            break
    return taken


def wait_until_done(waiting: queue.Queue, wake: threading.Event, timeout: float) -> None:
    """Wake the thread that empties `waiting`, and block until it has handled all that is queued
    now (or `timeout` seconds have passed)."""
    wake.set()
    with waiting.all_tasks_done:
        waiting.all_tasks_done.wait_for(lambda: not waiting.unfinished_tasks, timeout)


class PredictionLog:
    """The store (opened on first use, reopened after a failure) and the queue in front of it."""

    def __init__(self, settings: MonitoringSettings, metrics: MonitoringMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.enabled = settings.prediction_log
        self._queue: queue.Queue = queue.Queue(maxsize=settings.log_queue_size)
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._failed_at = -float("inf")
        self._lock = threading.Lock()
        self._wake = threading.Event()  # set: flush now
        self._stopping = threading.Event()  # set: flush once more, then end
        self.problem: str | None = None
        # When the store was first opened (UTC): predictions queued before wait until then.
        self.opened_at: datetime | None = None

    def store(self) -> Store | None:
        """The open store, or None when the log is off or the store cannot be reached (then
        `problem` says why, and it is tried again a few seconds later). Blocking: call it off
        the event loop."""
        if not self.enabled:
            return None
        with self._lock:
            if self._store is None and time.monotonic() - self._failed_at > REOPEN_AFTER_SECONDS:
                try:
                    from monitoring.store import open_store

                    self._store = open_store(self.settings.store_url)
                    self.opened_at = self.opened_at or utc_now()
                    self.problem = None
                except Exception as error:
                    self._failed_at = time.monotonic()
                    self.problem = f"the prediction store cannot be opened ({error})"
                    log.warning("%s", self.problem)
            return self._store

    def submit(self, record: PredictionRecord) -> bool:
        """Queue one prediction (sampled); never blocks. True when it was queued."""
        if not self.enabled or random.random() >= self.settings.log_sample_rate:
            return False
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.metrics.log_dropped.labels("queue_full").inc()
            return False
        self.metrics.log_queued.inc()
        return True

    def submit_shadow(self, answer: ShadowAnswer) -> None:
        """Queue the challenger's answer for a prediction queued before it; never blocks. (Not
        in `log_queued`, which counts predictions: a dead worker's loss is told from it.)"""
        try:
            self._queue.put_nowait(answer)
        except queue.Full:
            self.metrics.shadow.dropped.labels("not_logged").inc()

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread (waiting at most `timeout` seconds for
        it: a store that hangs does not hold up shutdown) and close the store."""
        if self._thread is not None:
            self._stopping.set()
            self._wake.set()
            self._thread.join(timeout)
            self._thread = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def flush_soon(self) -> None:
        """Wake the writer to write what is queued now, without waiting for it."""
        self._wake.set()

    def wait_until_written(self, timeout: float = 10.0) -> None:
        """Write what is queued now, and block until it is handled (tests, benchmarks)."""
        wait_until_done(self._queue, self._wake, timeout)

    def _run(self) -> None:
        self.store()  # at once: opening (upgrading) a store may take seconds
        last_prune = -float("inf")
        while not self._stopping.is_set():
            # Sleep between flushes instead of waking at each queued prediction: a wake-up per
            # request (a thread switch and a hand-over of the GIL) cost the worker more than
            # writing its row, and one transaction per flush keeps the database's share small.
            self._wake.wait(self.settings.log_flush_seconds)
            self._wake.clear()
            self._drain()
            if time.monotonic() - last_prune > PRUNE_EVERY_SECONDS:
                last_prune = time.monotonic()
                self._prune()
        self._drain()  # what was queued while the last flush ran

    def _drain(self) -> None:
        """Write everything queued, `log_batch_size` rows a transaction."""
        while batch := take(self._queue, self.settings.log_batch_size):
            self._write(batch)
            self.metrics.log_queued.dec(sum(isinstance(r, PredictionRecord) for r in batch))
            for _ in batch:
                self._queue.task_done()

    def _write(self, records: list[PredictionRecord | ShadowAnswer]) -> None:
        predictions = [record for record in records if isinstance(record, PredictionRecord)]
        answers = [record for record in records if isinstance(record, ShadowAnswer)]
        store = self.store()
        try:
            if store is None:
                raise RuntimeError(self.problem)
            self.metrics.log_written.inc(store.add_predictions(predictions, answers))
        except Exception as error:
            self.metrics.log_dropped.labels("store_error").inc(len(predictions))
            self.metrics.shadow.dropped.labels("not_logged").inc(len(answers))
            log.warning(
                "%d predictions and %d challenger answers not logged: %s",
                len(predictions), len(answers), error,
            )  # fmt: skip
            self._forget_store(store)

    def _prune(self) -> None:
        store = self.store()
        if store is None:
            return
        try:
            store.prune(self.settings.retention_rows, timedelta(days=self.settings.retention_days))
        except Exception as error:
            log.warning("the prediction log was not pruned: %s", error)

    def _forget_store(self, store: Store | None) -> None:
        # A broken connection pool is dropped; the next batch opens a fresh one.
        with self._lock:
            if store is not None and self._store is store:
                store.close()
                self._store = None
                self._failed_at = time.monotonic()
