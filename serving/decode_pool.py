"""Decode and preprocess request images on a bounded pool of threads, off the event loop.

Every route turns its input into 28×28 MNIST-style images here: bytes → `open_image` (type and
size checks, header only) → `load_image` → `mnist_core.imaging.to_mnist`. Failures become
`UploadError`s with the status and sentence the client sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio
import numpy as np
from PIL import Image

from mnist_core.imaging import EmptyImageError, grey_levels_to_mnist, to_mnist
from serving.decode import UploadError, load_image, open_image


@contextlib.contextmanager
def _empty_is_422() -> Iterator[None]:
    try:
        yield
    except EmptyImageError as error:
        raise UploadError(422, str(error)) from None


def _mnist_or_422(image: Image.Image) -> np.ndarray:
    with _empty_is_422():
        return to_mnist(image)


def _grey_levels_to_mnist(rows: list[list[int]]) -> np.ndarray:
    # Sizes and value ranges are checked by the request schema; only the shape is left.
    if len({len(row) for row in rows}) != 1:
        raise UploadError(422, "`pixels` must be a rectangle: every row of the same length.")
    with _empty_is_422():
        return grey_levels_to_mnist(np.asarray(rows, dtype=np.uint8))


class DecodePool:
    """Runs the CPU work of requests on at most `threads` threads of this process, and admits
    pictures only while the pixels waiting to be decoded stay within a budget: past it a request
    is refused at once with 503 and `Retry-After` rather than queued (a small picture is always
    admitted when nothing else waits)."""

    def __init__(self, max_image_pixels: int, threads: int, pending_pixels: int) -> None:
        self.max_image_pixels = max_image_pixels
        self.pending_budget = pending_pixels
        self.pending = 0
        self.limiter = anyio.CapacityLimiter(threads)

    @contextlib.contextmanager
    def _admitted(self, pixels: int) -> Iterator[None]:
        if self.pending and self.pending + pixels > self.pending_budget:
            raise UploadError(
                503,
                "The server is busy with other large pictures: try again in a moment.",
                headers={"Retry-After": "1"},
            )
        self.pending += pixels
        try:
            yield
        finally:
            self.pending -= pixels

    def _load_to_mnist(self, image: Image.Image) -> np.ndarray:
        return _mnist_or_422(load_image(image))

    def _each_to_mnist(
        self, images: list[Image.Image | UploadError]
    ) -> list[np.ndarray | UploadError]:
        outcomes: list[np.ndarray | UploadError] = []
        for image in images:
            try:
                outcomes.append(
                    image if isinstance(image, UploadError) else self._load_to_mnist(image)
                )
            except UploadError as error:
                outcomes.append(error)
        return outcomes

    def _open(self, data: bytes | UploadError) -> Image.Image | UploadError:
        if isinstance(data, UploadError):
            return data
        try:
            return open_image(data, self.max_image_pixels)
        except UploadError as error:
            return error

    async def upload(self, data: bytes) -> np.ndarray:
        """One uploaded picture → a 28×28 uint8 image; raises `UploadError`."""
        image = open_image(data, self.max_image_pixels)  # the header only: cheap
        with self._admitted(image.width * image.height):
            return await anyio.to_thread.run_sync(self._load_to_mnist, image, limiter=self.limiter)

    async def uploads(self, uploads: list[bytes | UploadError]) -> list[np.ndarray | UploadError]:
        """Several uploads → an image or the error of each, in order (one bad one spoils none)."""
        images = [self._open(data) for data in uploads]
        pixels = sum(i.width * i.height for i in images if isinstance(i, Image.Image))
        with self._admitted(pixels):
            return await anyio.to_thread.run_sync(self._each_to_mnist, images, limiter=self.limiter)

    async def grey_levels(self, rows: list[list[int]]) -> np.ndarray:
        """Rows of grey levels 0-255 → a 28×28 uint8 image; raises `UploadError`."""
        return await anyio.to_thread.run_sync(_grey_levels_to_mnist, rows, limiter=self.limiter)
