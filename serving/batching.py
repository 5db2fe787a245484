"""Dynamic micro-batching: images from concurrent requests share one ONNX Runtime call.

A request hands its preprocessed images to `MicroBatcher.infer` and gets back its own rows. One
task gathers waiting images into a batch of at most `max_size`, waiting at most `max_wait_ms` for
more, and only while other requests are still on their way (announced by `arriving()`), so a lone
request is run at once. Inference runs on one dedicated thread, outside the event loop; ONNX
Runtime's own threads do the parallel work. Images of different model versions never share a
batch: each request's rows come from the version it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mnist_core.classifier import DigitClassifier
from serving.metrics import ServiceMetrics


@dataclass
class _Request:
    classifier: DigitClassifier
    pixels: np.ndarray  # uint8 (k, 28, 28)
    future: asyncio.Future[np.ndarray]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(
        self, max_size: int, max_wait_ms: float, metrics: ServiceMetrics, enabled: bool = True
    ) -> None:
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000
        self.enabled = enabled
        self.metrics = metrics
        self._arriving = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._held: _Request | None = None  # did not fit the last batch: starts the next one
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        if self.enabled:
            self._task = asyncio.create_task(self._gather_forever(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

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
            return await loop.run_in_executor(self._executor, classifier.predict_proba, pixels)
        if self._queue is None:
            raise RuntimeError("the batcher has not been started")
        request = _Request(classifier, pixels, loop.create_future())
        self._queue.put_nowait(request)
        return await request.future

    async def _next(self, timeout: float | None) -> _Request | None:
        """The held-over request, else the next queued one (waiting up to `timeout`)."""
        assert self._queue is not None
        if self._held is not None:
            request, self._held = self._held, None
            return request
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0 or self._arriving == 0:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._queue.get(), timeout)
        return None

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

    async def _gather_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            started = time.perf_counter()
            for request in batch:
                self.metrics.queue_wait.observe(started - request.queued_at)
            pixels = np.concatenate([request.pixels for request in batch])
            self.metrics.batch_size.observe(len(pixels))
            try:
                probabilities = await loop.run_in_executor(
                    self._executor, batch[0].classifier.predict_proba, pixels
                )
            except Exception as error:
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            offsets = np.cumsum([len(request.pixels) for request in batch])[:-1]
            for request, rows in zip(batch, np.split(probabilities, offsets), strict=True):
                if not request.future.done():  # the client may have gone away
                    request.future.set_result(rows)
