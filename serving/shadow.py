"""Shadow scoring: the `challenger` version answers live requests too, off the request path.

After production's answer is made, the request hands its 28×28 input and that answer to a
bounded queue without waiting (`submit`); when the queue is full the work is dropped and counted.
One thread wakes every `WAKE_SECONDS`, runs what is queued through the challenger in batches of
at most `batch_max_size` images (the same classifier wrapper, and the same `uncertain` rule for
its version, as production), counts agreement and `uncertain` answers in Prometheus, and hands
the challenger's answer to the prediction log, beside production's. Nothing of it can delay or
fail a request: its errors are logged and counted, never raised.

The challenger is a second `ModelStore`, following its alias as production's follows its own:
no version holds the alias (or the one that does is production's), nothing is scored.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
from dataclasses import dataclass

import numpy as np

from monitoring.model_metrics import ShadowMetrics
from monitoring.records import ShadowAnswer
from monitoring.writer import PredictionLog, take, wait_until_done
from serving.model_store import ModelStore, ServedModel
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

# How often the thread wakes to score what is queued: one wake-up a batch, not one a request
# (a thread switch per request costs the worker more than the challenger's inference).
WAKE_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """What the challenger needs of one answered request."""

    prediction_id: str
    pixels: np.ndarray  # (28, 28) uint8, as production saw it
    production_version: str
    digit: int
    uncertain: bool
    logged: bool  # production's answer was queued for the log: the challenger's joins it


class ShadowScorer:
    """The queue in front of the challenger, and the thread that empties it."""

    def __init__(
        self,
        settings: ServingSettings,
        challenger: ModelStore | None,
        metrics: ShadowMetrics,
        prediction_log: PredictionLog,
    ) -> None:
        self.settings = settings
        self.challenger = challenger  # None: shadow scoring is off
        self.metrics = metrics
        self.prediction_log = prediction_log
        self._queue: queue.Queue[ShadowJob] = queue.Queue(maxsize=settings.shadow_queue_size)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ServedModel | None:
        return None if self.challenger is None else self.challenger.current

    def submit(self, job: ShadowJob) -> None:
        """Queue one answered request for the challenger (sampled); never blocks or raises."""
        challenger = self.current
        if challenger is None or challenger.version == job.production_version:
            return
        if random.random() >= self.settings.shadow_sample_rate:
            return
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.metrics.dropped.labels("queue_full").inc()

    async def follow(self, production: ModelStore) -> None:
        """Follow the challenger's alias, once production's first load has been tried (so that
        the two do not compete for the start)."""
        if self.challenger is None:
            return
        while not production.checked.is_set():
            await asyncio.sleep(0.05)
        await self.challenger.poll()

    def start(self) -> None:
        if self.challenger is not None and self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Score what is queued (for at most `timeout` seconds), then stop; what is left is
        counted as dropped. Before the prediction log stops, so that the answers reach it."""
        if self.challenger is not None:
            self.challenger.close()  # no more registry checks; the loaded version stays
        if self._thread is not None:
            self._stopping.set()
            self._wake.set()
            self._thread.join(timeout)
            if self._thread.is_alive():  # still scoring: it counts what it does or drops
                log.warning("The shadow thread did not stop within %g s", timeout)
                return
            self._thread = None
        left = self._queue.qsize()
        if left:
            self.metrics.dropped.labels("shutdown").inc(left)

    def wait_until_scored(self, timeout: float = 10.0) -> None:
        """Score what is queued now, and block until it is done (tests, benchmarks)."""
        wait_until_done(self._queue, self._wake, timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(WAKE_SECONDS)
            self._wake.clear()
            self._drain()
        self._drain()  # what was queued while the last batch ran

    def _drain(self) -> None:
        while jobs := take(self._queue, self.settings.batch_max_size):
            try:
                self._score(jobs)
            except Exception:  # whatever it is, the thread goes on and no request sees it
                log.exception("The challenger failed to score %d answers", len(jobs))
                self.metrics.dropped.labels("error").inc(len(jobs))
            finally:
                for _ in jobs:
                    self._queue.task_done()

    def _score(self, jobs: list[ShadowJob]) -> None:
        """One batch through the challenger loaded now, counted and logged."""
        challenger = self.current
        fresh = [
            job
            for job in jobs
            if challenger is not None and job.production_version != challenger.version
        ]
        if len(fresh) < len(jobs):
            self.metrics.dropped.labels("stale").inc(len(jobs) - len(fresh))
        if challenger is None or not fresh:
            return
        probabilities = challenger.classifier.predict_proba(np.stack([j.pixels for j in fresh]))
        digits = probabilities.argmax(axis=1)
        confidences = probabilities.max(axis=1)
        uncertain = confidences < challenger.uncertain_below(self.settings.uncertain_below)
        production = np.array([job.digit for job in fresh])
        self._count(production, digits, np.array([job.uncertain for job in fresh]), uncertain)
        for job, digit, confidence, flagged in zip(
            fresh, digits, confidences, uncertain, strict=True
        ):
            if job.logged:
                self.prediction_log.submit_shadow(
                    ShadowAnswer(job.prediction_id, challenger.version, int(digit),
                                 float(confidence), bool(flagged))
                )  # fmt: skip

    def _count(
        self,
        production: np.ndarray,
        challenger: np.ndarray,
        production_uncertain: np.ndarray,
        challenger_uncertain: np.ndarray,
    ) -> None:
        """A batch's comparisons, one counter update per label (each is a write to a shared
        file with several workers)."""
        agreed = int((production == challenger).sum())
        self.metrics.comparisons.labels("agree").inc(agreed)
        self.metrics.comparisons.labels("disagree").inc(len(production) - agreed)
        self.metrics.uncertain.labels("production").inc(int(production_uncertain.sum()))
        self.metrics.uncertain.labels("challenger").inc(int(challenger_uncertain.sum()))
        differ = production != challenger
        pairs, counts = np.unique(
            np.stack([production[differ], challenger[differ]], axis=1), axis=0, return_counts=True
        )
        for (said, instead), count in zip(pairs, counts, strict=True):
            self.metrics.disagreements.labels(str(said), str(instead)).inc(int(count))
