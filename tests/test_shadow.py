"""The shadow scorer on its own: a challenger that answers known digits, a bounded queue, the
sample rate, what is counted, and faults that stay inside it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mnist_core.classifier import ModelMetadata
from monitoring.model_metrics import ShadowMetrics
from monitoring.records import ShadowAnswer
from serving.model_store import ServedModel
from serving.settings import ServingSettings
from serving.shadow import ShadowJob, ShadowScorer


class Challenger:
    """A classifier whose answer for an image is the digit in its first pixel, with the
    confidence in its second (in hundredths); `fails` makes it raise."""

    metadata = ModelMetadata(uncertain_below=0.5)

    def __init__(self) -> None:
        self.fails = False
        self.calls: list[int] = []

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        if self.fails:
            raise RuntimeError("the challenger broke")
        self.calls.append(len(pixels))
        probabilities = np.zeros((len(pixels), 10), np.float32)
        for row, image in enumerate(pixels):
            probabilities[row, image[0, 0]] = image[0, 1] / 100
        return probabilities


@dataclass
class Aliased:
    """What the scorer reads of a `ModelStore`: the version loaded now (None: no challenger)."""

    current: ServedModel | None
    closed: bool = False

    def close(self) -> None:
        self.closed = True


@dataclass
class Log:
    answers: list[ShadowAnswer] = field(default_factory=list)

    def submit_shadow(self, answer: ShadowAnswer) -> None:
        self.answers.append(answer)


def served(version: str = "2") -> ServedModel:
    return ServedModel("mnist-cnn", "challenger", version, None, "test", Challenger())


def job(production: int, challenger: int, confidence: int = 90, uncertain: bool = False,
        logged: bool = True, version: str = "1") -> ShadowJob:  # fmt: skip
    pixels = np.zeros((28, 28), np.uint8)
    pixels[0, :2] = challenger, confidence
    return ShadowJob(f"{production}{challenger}".ljust(32, "0"), pixels, version, production,
                     uncertain, logged)  # fmt: skip


def scorer(aliased: Aliased | None, **settings: object) -> tuple[ShadowScorer, CollectorRegistry]:
    registry = CollectorRegistry()
    settings.setdefault("MNIST_SHADOW_SAMPLE_RATE", 1)  # every answer, unless the test says
    shadow = ShadowScorer(ServingSettings(**settings), aliased, ShadowMetrics(registry), Log())  # type: ignore[arg-type]
    return shadow, registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_agreement_disagreements_and_uncertain_shares_are_counted() -> None:
    challenger = served()
    shadow, registry = scorer(Aliased(challenger))
    for production, theirs, confidence, uncertain in [
        (7, 7, 90, False), (7, 7, 30, True), (4, 9, 90, False), (4, 9, 40, False),
        (1, 7, 90, False),
    ]:  # fmt: skip
        shadow.submit(job(production, theirs, confidence, uncertain))
    shadow.start()  # after the five are queued: one batch, however the thread is scheduled
    shadow.wait_until_scored()
    shadow.stop()
    comparisons = "mnist_shadow_comparisons_total"
    assert value(registry, comparisons, outcome="agree") == 2
    assert value(registry, comparisons, outcome="disagree") == 3
    disagreements = "mnist_shadow_disagreements_total"
    assert value(registry, disagreements, production="4", challenger="9") == 2
    assert value(registry, disagreements, production="1", challenger="7") == 1
    # Production flagged one; the challenger, by its own threshold (0.5), two.
    assert value(registry, "mnist_shadow_uncertain_total", side="production") == 1
    assert value(registry, "mnist_shadow_uncertain_total", side="challenger") == 2
    answers = shadow.prediction_log.answers
    assert [(a.challenger_version, a.digit, a.uncertain) for a in answers] == [
        ("2", 7, False), ("2", 7, True), ("2", 9, False), ("2", 9, True), ("2", 7, False),
    ]  # fmt: skip
    assert challenger.classifier.calls == [5]  # one batch


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    shadow, registry = scorer(Aliased(served()), MNIST_SHADOW_QUEUE_SIZE=2)  # not started
    for _ in range(5):
        shadow.submit(job(7, 7))
    assert value(registry, "mnist_shadow_dropped_total", reason="queue_full") == 3
    shadow.stop()  # what was queued and never scored is counted too
    assert value(registry, "mnist_shadow_dropped_total", reason="shutdown") == 2


def test_the_sample_rate_decides_which_requests_are_shadowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws = iter([0.1, 0.6, 0.29, 0.3, 0.9])
    monkeypatch.setattr("serving.shadow.random.random", lambda: next(draws))
    shadow, registry = scorer(Aliased(served()), MNIST_SHADOW_SAMPLE_RATE=0.3)
    shadow.start()
    for _ in range(5):
        shadow.submit(job(3, 3))
    shadow.wait_until_scored()
    shadow.stop()
    assert value(registry, "mnist_shadow_comparisons_total", outcome="agree") == 2


def test_nothing_is_scored_without_a_challenger_or_against_itself() -> None:
    aliased = Aliased(None)
    shadow, registry = scorer(aliased, MNIST_SHADOW_QUEUE_SIZE=1)
    shadow.submit(job(7, 7))
    aliased.current = served(version="1")  # the challenger alias names production's version
    shadow.submit(job(7, 7, version="1"))
    assert shadow._queue.qsize() == 0
    # Queued for version 2, which then leaves: the work is stale, and counted so.
    aliased.current = served(version="2")
    shadow.submit(job(7, 7))
    aliased.current = None
    shadow.start()
    shadow.wait_until_scored()
    shadow.stop()
    assert value(registry, "mnist_shadow_dropped_total", reason="stale") == 1
    assert value(registry, "mnist_shadow_comparisons_total", outcome="agree") == 0
    assert aliased.closed


def test_a_failing_challenger_is_counted_and_the_thread_goes_on() -> None:
    challenger = served()
    shadow, registry = scorer(Aliased(challenger))
    shadow.start()
    challenger.classifier.fails = True
    shadow.submit(job(7, 7))  # never raises into the request
    shadow.wait_until_scored()
    assert value(registry, "mnist_shadow_dropped_total", reason="error") == 1
    challenger.classifier.fails = False
    shadow.submit(job(7, 7))
    shadow.wait_until_scored()
    shadow.stop()
    assert value(registry, "mnist_shadow_comparisons_total", outcome="agree") == 1


def test_answers_of_predictions_not_logged_are_compared_but_not_logged() -> None:
    shadow, registry = scorer(Aliased(served()))
    shadow.start()
    shadow.submit(job(7, 7, logged=False))
    shadow.submit(job(7, 1, logged=True))
    shadow.wait_until_scored()
    shadow.stop()
    assert value(registry, "mnist_shadow_comparisons_total", outcome="agree") == 1
    assert [answer.digit for answer in shadow.prediction_log.answers] == [1]


def test_batches_hold_at_most_the_batch_size() -> None:
    challenger = served()
    shadow, _ = scorer(Aliased(challenger), MNIST_BATCH_MAX_SIZE=4)
    for _ in range(10):
        shadow.submit(job(7, 7))
    shadow.start()
    shadow.wait_until_scored()
    shadow.stop()
    assert challenger.classifier.calls == [4, 4, 2]
