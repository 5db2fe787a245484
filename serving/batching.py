"""Dynamic micro-batching: images from concurrent requests share one ONNX Runtime call.

A request hands its preprocessed images to `MicroBatcher.infer` and gets back its own rows. One
task gathers waiting images into a batch of at most `max_size`, waiting at most `max_wait_ms` for
more, and only while other requests are still on their way (announced by `arriving()`), so a lone
request is run at once. Inference runs on one dedicated thread, outside the event loop; ONNX
Runtime's own threads do the parallel work. Images of different model versions never share a
batch: each request's rows come from the version it started with.

Nothing waits forever: the queue is bounded (a request past `queue_limit` gets 503 with
`Retry-After` at once), every request has a deadline (503 after `deadline_seconds`), a caller
that goes away is dropped from its batch, and the gather task is supervised: when it dies, the
death is logged, its requests get 503, `problem` tells `/ready`, and it is started again.
Refusals are `UploadError`s, which the app answers with their status, sentence and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from serving.decode import UploadError
from serving.metrics import ServiceMetrics

if TYPE_CHECKING:  # ONNX Runtime: loaded with the model, after the socket listens
    from mnist_core.classifier import DigitClassifier

log = logging.getLogger(__name__)

RETRY_AFTER = {"Retry-After": "1"}
# After the gather task dies it is started again after this delay, doubled on each death in a
# row up to the maximum, so that a fault that recurs at once does not spin.
RESTART_DELAY_SECONDS = 0.1
MAX_RESTART_DELAY_SECONDS = 5.0


@dataclass
class _Request:
    classifier: DigitClassifier
    pixels: np.ndarray  # uint8 (k, 28, 28)
    future: asyncio.Future[np.ndarray]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(
        self,
        max_size: int,
        max_wait_ms: float,
        metrics: ServiceMetrics,
        enabled: bool = True,
        queue_limit: int = 1024,
        deadline_seconds: float = 10.0,
    ) -> None:
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000
        self.enabled = enabled
        self.metrics = metrics
        self.queue_limit = queue_limit
        self.deadline = deadline_seconds
        self.problem: str | None = None  # why the batcher cannot answer now, for `/ready`
        self._arriving = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._held: _Request | None = None  # did not fit the last batch: starts the next one
        self._taken: list[_Request] = []  # out of the queue, not answered yet
        self._deaths = 0  # of the gather task, in a row
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.queue_limit)
        if self.enabled:
            self._task = asyncio.create_task(self._supervise(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop gathering; every request still waiting gets 503 (none is left hanging)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        waiting = list(self._taken)
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        self._fail(waiting, "The server is shutting down: try again in a moment.")
        self._executor.shutdown(wait=False)  # a batch in flight ends on its own thread

    @staticmethod
    def _fail(requests: list[_Request], sentence: str) -> None:
        for request in requests:
            if not request.future.done():
                request.future.set_exception(UploadError(503, sentence, headers=RETRY_AFTER))

    async def _within_deadline(self, answer: asyncio.Future[np.ndarray]) -> np.ndarray:
        try:
            return await asyncio.wait_for(answer, self.deadline)
        except TimeoutError:  # `wait_for` cancelled the request: its batch will skip it
            raise UploadError(
                503,
                f"The model did not answer within {self.deadline:g} s: try again in a moment.",
                headers=RETRY_AFTER,
            ) from None

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Announce a request that is decoding its images, so a batch may wait for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def infer(self, classifier: DigitClassifier, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (k, 10) for `pixels` (k, 28, 28), computed in a shared batch."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self.metrics.batch_size.observe(len(pixels))
            return await self._within_deadline(
                loop.run_in_executor(self._executor, classifier.predict_proba, pixels)
            )
        if self._queue is None:
            raise RuntimeError("the batcher has not been started")
        request = _Request(classifier, pixels, loop.create_future())
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull:
            raise UploadError(
                503,
                f"The server has {self.queue_limit} requests waiting: try again in a moment.",
                headers=RETRY_AFTER,
            ) from None
        return await self._within_deadline(request.future)

    async def _next(self, timeout: float | None) -> _Request | None:
        """The held-over request, else the next queued one (waiting up to `timeout`)."""
        assert self._queue is not None
        if self._held is not None:
            request, self._held = self._held, None
            return request
        request = None
        if not self._queue.empty():
            request = self._queue.get_nowait()
        elif timeout is None:
            request = await self._queue.get()
        elif timeout > 0 and self._arriving:
            with contextlib.suppress(TimeoutError):
                request = await asyncio.wait_for(self._queue.get(), timeout)
        if request is not None:
            self._taken.append(request)
        return request

    async def _gather(self) -> list[_Request]:
        """One batch: the first waiting request, then whatever joins it in time and fits."""
        first = await self._next(timeout=None)
        assert first is not None
        batch, size = [first], len(first.pixels)
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_size:
            request = await self._next(timeout=deadline - time.perf_counter())
            if request is None:
                break
            if request.classifier is not first.classifier or size + len(request.pixels) > (
                self.max_size
            ):
                self._held = request
                break
            batch.append(request)
            size += len(request.pixels)
        return batch

    async def _supervise(self) -> None:
        """Run the gather loop, and start it again whenever it dies."""
        while True:
            try:
                await self._gather_forever()
            except Exception:
                self._deaths += 1
                self.problem = "the micro-batcher stopped and is being restarted"
                log.exception("The micro-batcher's gather task died; restarting it")
                self._fail(self._taken, "The server hit an internal fault: try again.")
                self._taken, self._held = [], None
                delay = RESTART_DELAY_SECONDS * 2 ** (self._deaths - 1)
                await asyncio.sleep(min(delay, MAX_RESTART_DELAY_SECONDS))
                self.problem = None

    async def _gather_forever(self) -> None:
        while True:
            batch = [r for r in await self._gather() if not r.future.done()]  # callers gone
            if batch:
                await self._answer(batch)
            self._taken = [self._held] if self._held is not None else []
            self._deaths = 0

    async def _answer(self, batch: list[_Request]) -> None:
        """Run one batch through its model and hand each request its rows (or the error)."""
        started = time.perf_counter()
        for request in batch:
            self.metrics.queue_wait.observe(started - request.queued_at)
        pixels = np.concatenate([request.pixels for request in batch])
        self.metrics.batch_size.observe(len(pixels))
        loop = asyncio.get_running_loop()
        try:
            probabilities = await loop.run_in_executor(
                self._executor, batch[0].classifier.predict_proba, pixels
            )
        except Exception as error:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        offsets = np.cumsum([len(request.pixels) for request in batch])[:-1]
        for request, rows in zip(batch, np.split(probabilities, offsets), strict=True):
            if not request.future.done():  # the client may have gone away
                request.future.set_result(rows)
