"""The micro-batcher: shared calls, each caller its own rows, a lone request never waits."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest

from serving.batching import MicroBatcher
from serving.decode import UploadError
from serving.metrics import ServiceMetrics


class RecordingClassifier:
    """Stands in for `DigitClassifier`: row i of the answer is the image's tag, in every column,
    so a caller can tell its own rows; records the size of every call and its thread."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.delay = delay

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(len(pixels))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return np.repeat(pixels[:, :1, 0].astype(np.float32), 10, axis=1)


def tagged(*tags: int) -> np.ndarray:
    images = np.zeros((len(tags), 28, 28), np.uint8)
    images[:, 0, 0] = tags
    return images


async def started(
    max_size: int = 32, max_wait_ms: float = 2.0, enabled: bool = True, **limits: float
) -> MicroBatcher:
    batcher = MicroBatcher(max_size, max_wait_ms, ServiceMetrics(), enabled=enabled, **limits)
    await batcher.start()
    return batcher


class GatedClassifier(RecordingClassifier):
    """Answers only once `release` is set, so that requests pile up behind the first batch."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(timeout=10)
        return super().predict_proba(pixels)


async def in_flight(batcher: MicroBatcher, classifier: GatedClassifier, tag: int) -> asyncio.Task:
    """A request that the batcher has handed to the (gated) model."""
    task = asyncio.create_task(batcher.infer(classifier, tagged(tag)))
    await asyncio.to_thread(classifier.entered.wait, 10)
    return task


def test_a_lone_request_does_not_wait_for_company() -> None:
    async def scenario() -> tuple[np.ndarray, float]:
        batcher = await started(max_wait_ms=5000)
        classifier = RecordingClassifier()
        begun = time.perf_counter()
        rows = await batcher.infer(classifier, tagged(7))
        elapsed = time.perf_counter() - begun
        await batcher.stop()
        return rows, elapsed

    rows, elapsed = asyncio.run(scenario())
    assert rows.shape == (1, 10) and rows[0, 0] == 7
    assert elapsed < 1.0  # far below the 5 s window it would wait if it waited for company


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    classifier = RecordingClassifier()

    async def scenario() -> list[np.ndarray]:
        batcher = await started()
        answers = await asyncio.gather(*(batcher.infer(classifier, tagged(t)) for t in range(8)))
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    assert [int(rows[0, 0]) for rows in answers] == list(range(8))
    assert classifier.calls == [8]
    assert classifier.threads == {"inference_0"}  # off the event loop's thread


def test_batches_never_exceed_the_maximum_size() -> None:
    classifier = RecordingClassifier()

    async def scenario() -> list[np.ndarray]:
        batcher = await started(max_size=4)
        requests = [batcher.infer(classifier, tagged(t)) for t in range(10)]
        requests.append(batcher.infer(classifier, tagged(20, 21, 22)))  # a 3-image request
        answers = await asyncio.gather(*requests)
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    assert [int(rows[0, 0]) for rows in answers[:10]] == list(range(10))
    assert answers[10][:, 0].tolist() == [20, 21, 22]
    assert max(classifier.calls) <= 4 and sum(classifier.calls) == 13


def test_a_batch_waits_only_while_requests_are_arriving() -> None:
    classifier = RecordingClassifier()

    async def late_request(batcher: MicroBatcher) -> np.ndarray:
        with batcher.arriving():
            await asyncio.sleep(0.05)  # still decoding when the first request is queued
            pixels = tagged(2)
        return await batcher.infer(classifier, pixels)

    async def scenario() -> None:
        batcher = await started(max_wait_ms=2000)
        late = asyncio.create_task(late_request(batcher))
        await asyncio.sleep(0)  # the late request has announced itself
        first = await batcher.infer(classifier, tagged(1))
        assert first[0, 0] == 1 and (await late)[0, 0] == 2
        await batcher.stop()

    asyncio.run(scenario())
    assert classifier.calls == [2]


def test_versions_never_share_a_batch() -> None:
    old, new = RecordingClassifier(), RecordingClassifier()

    async def scenario() -> list[np.ndarray]:
        batcher = await started()
        answers = await asyncio.gather(
            batcher.infer(old, tagged(1)),
            batcher.infer(new, tagged(2)),
            batcher.infer(old, tagged(3)),
        )
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    assert [int(rows[0, 0]) for rows in answers] == [1, 2, 3]
    assert sum(old.calls) == 2 and new.calls == [1]


def test_switched_off_every_request_runs_alone() -> None:
    classifier = RecordingClassifier()

    async def scenario() -> list[np.ndarray]:
        batcher = await started(enabled=False)
        answers = await asyncio.gather(*(batcher.infer(classifier, tagged(t)) for t in range(5)))
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    assert [int(rows[0, 0]) for rows in answers] == list(range(5))
    assert classifier.calls == [1] * 5


def test_an_inference_error_reaches_every_caller_of_the_batch() -> None:
    class Broken:
        def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
            raise RuntimeError("onnxruntime failed")

    async def scenario() -> list[object]:
        batcher = await started()
        outcomes = await asyncio.gather(
            *(batcher.infer(Broken(), tagged(t)) for t in range(3)), return_exceptions=True
        )
        # The batcher survives the error and serves the next request.
        assert (await batcher.infer(RecordingClassifier(), tagged(9)))[0, 0] == 9
        await batcher.stop()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)


@pytest.mark.parametrize("enabled", [True, False])
def test_batch_sizes_are_measured(enabled: bool) -> None:
    async def scenario() -> ServiceMetrics:
        batcher = await started(enabled=enabled)
        await asyncio.gather(*(batcher.infer(RecordingClassifier(), tagged(t)) for t in range(3)))
        await batcher.stop()
        return batcher.metrics

    metrics = asyncio.run(scenario())
    count = metrics.registry.get_sample_value("mnist_inference_batch_size_count")
    total = metrics.registry.get_sample_value("mnist_inference_batch_size_sum")
    assert total == 3 and count >= 1


def test_a_full_queue_answers_503_with_retry_after_at_once() -> None:
    classifier = GatedClassifier()

    async def scenario() -> UploadError:
        batcher = await started(max_size=1, queue_limit=1)
        first = await in_flight(batcher, classifier, 1)
        queued = asyncio.create_task(batcher.infer(classifier, tagged(2)))
        await asyncio.sleep(0)  # queued: the queue is full now
        with pytest.raises(UploadError) as refused:
            await batcher.infer(classifier, tagged(3))
        classifier.release.set()
        assert (await first)[0, 0] == 1 and (await queued)[0, 0] == 2
        await batcher.stop()
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers == {"Retry-After": "1"}
    assert "1 requests waiting" in refused.detail


@pytest.mark.parametrize("enabled", [True, False])
def test_a_request_past_its_deadline_gets_503(enabled: bool) -> None:
    classifier = GatedClassifier()

    async def scenario() -> tuple[UploadError, float]:
        batcher = await started(enabled=enabled, deadline_seconds=0.2)
        begun = time.perf_counter()
        with pytest.raises(UploadError) as late:
            await batcher.infer(classifier, tagged(1))
        elapsed = time.perf_counter() - begun
        classifier.release.set()
        await batcher.stop()
        return late.value, elapsed

    late, elapsed = asyncio.run(scenario())
    assert late.status_code == 503 and "did not answer within 0.2 s" in late.detail
    assert elapsed < 2


def test_a_cancelled_caller_is_dropped_and_the_others_are_answered() -> None:
    classifier = GatedClassifier()

    async def scenario() -> None:
        batcher = await started(max_size=1)
        first = await in_flight(batcher, classifier, 1)
        gone = asyncio.create_task(batcher.infer(classifier, tagged(2)))
        await asyncio.sleep(0)
        gone.cancel()  # the client went away while its request was queued
        classifier.release.set()
        assert (await first)[0, 0] == 1
        assert (await batcher.infer(classifier, tagged(3)))[0, 0] == 3
        assert gone.cancelled()
        await batcher.stop()

    asyncio.run(scenario())
    assert classifier.calls == [1, 1]  # the cancelled request's image was never run


def test_a_dead_gather_task_is_logged_reported_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    classifier = RecordingClassifier()

    async def scenario() -> tuple[UploadError, str | None]:
        batcher = await started()
        real_gather, deaths = batcher._gather, []

        async def dies_once() -> list:
            batch = await real_gather()
            if not deaths:
                deaths.append(True)
                raise RuntimeError("a bug in the gather loop")
            return batch

        batcher._gather = dies_once
        with pytest.raises(UploadError) as failed:
            await batcher.infer(classifier, tagged(1))
        problem = batcher.problem  # what `/ready` shows while it restarts
        assert (await batcher.infer(classifier, tagged(2)))[0, 0] == 2
        assert batcher.problem is None
        await batcher.stop()
        return failed.value, problem

    with caplog.at_level(logging.ERROR, logger="serving.batching"):
        failed, problem = asyncio.run(scenario())
    assert failed.status_code == 503
    assert problem == "the micro-batcher stopped and is being restarted"
    assert "gather task died" in caplog.text and "a bug in the gather loop" in caplog.text


def test_stop_answers_every_request_still_waiting() -> None:
    classifier = GatedClassifier()

    async def scenario() -> list[object]:
        batcher = await started(max_size=1)
        first = await in_flight(batcher, classifier, 1)
        waiting = [asyncio.create_task(batcher.infer(classifier, tagged(t))) for t in (2, 3)]
        await asyncio.sleep(0)
        stopping = asyncio.create_task(batcher.stop())
        outcomes = await asyncio.wait_for(
            asyncio.gather(first, *waiting, return_exceptions=True), timeout=5
        )
        classifier.release.set()  # the batch in flight may finish: its caller already has 503
        await stopping
        return outcomes

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, UploadError) and o.status_code == 503 for o in outcomes), outcomes
    assert all("shutting down" in o.detail for o in outcomes)  # type: ignore[union-attr]
