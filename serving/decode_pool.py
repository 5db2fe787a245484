"""Decode and preprocess request images on a bounded pool of threads, off the event loop (or on
it, when a request's pictures are small enough to cost less than the hop to a thread).

Every route turns its input into 28×28 MNIST-style images here: bytes → `open_image` (type and
size checks, header only) → `load_image` → `mnist_core.imaging.to_mnist`. Failures become
`UploadError`s with the status and sentence the client sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import anyio
import numpy as np
from PIL import Image

from mnist_core.imaging import EmptyImageError, grey_levels_to_mnist, to_mnist
from serving.decode import UploadError, load_image, open_image

T = TypeVar("T")
# Pictures decoded on the event loop come in at most this many bytes (the page's canvas: 5 KB).
INLINE_BYTES = 64 * 1024


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
    admitted when nothing else waits). A request of PNGs holding at most `inline_pixels` in all,
    in at most `INLINE_BYTES`, is done at once on the event loop, PNGs decoded by libspng: a
    280×280 canvas takes about 0.4 ms there, less than the hop to a thread and back costs the
    worker under load. Only PNGs: their decoding costs what their pixels do, where a small JPEG
    can hold thousands of progressive scans; the threads decode with Pillow, which releases
    the GIL."""

    def __init__(
        self, max_image_pixels: int, threads: int, pending_pixels: int, inline_pixels: int = 0
    ) -> None:
        self.max_image_pixels = max_image_pixels
        self.pending_budget = pending_pixels
        self.inline_pixels = inline_pixels
        self.pending = 0
        self.limiter = anyio.CapacityLimiter(threads)

    def _inline(self, pixels: int, images: list[Image.Image], size: int) -> bool:
        """Whether pictures of `pixels` in all, `size` bytes, are decoded on the event loop."""
        return (
            pixels <= self.inline_pixels
            and size <= INLINE_BYTES
            and all(image.format == "PNG" for image in images)
        )

    async def _run(
        self, inline: bool, pixels: int, work: Callable[..., T], *arguments: object
    ) -> T:
        """`work(*arguments)` for pictures of `pixels` in all: here if `inline`, else on a thread
        once the budget admits them."""
        if inline:
            return work(*arguments)
        with self._admitted(pixels):
            return await anyio.to_thread.run_sync(work, *arguments, limiter=self.limiter)

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

    def _load_to_mnist(self, image: Image.Image, data: bytes, libspng: bool) -> np.ndarray:
        return _mnist_or_422(load_image(image, data, libspng))

    def _each_to_mnist(
        self,
        images: list[Image.Image | UploadError],
        uploads: list[bytes | UploadError],
        libspng: bool,
    ) -> list[np.ndarray | UploadError]:
        outcomes: list[np.ndarray | UploadError] = []
        for image, data in zip(images, uploads, strict=True):
            try:
                outcomes.append(
                    self._load_to_mnist(image, data, libspng)  # type: ignore[arg-type]
                    if isinstance(image, Image.Image)
                    else image
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
        pixels = image.width * image.height
        inline = self._inline(pixels, [image], len(data))
        return await self._run(inline, pixels, self._load_to_mnist, image, data, inline)

    async def uploads(self, uploads: list[bytes | UploadError]) -> list[np.ndarray | UploadError]:
        """Several uploads → an image or the error of each, in order (one bad one spoils none)."""
        opened = [self._open(data) for data in uploads]
        images = [image for image in opened if isinstance(image, Image.Image)]
        pixels = sum(image.width * image.height for image in images)
        size = sum(len(data) for data in uploads if isinstance(data, bytes))
        inline = self._inline(pixels, images, size)
        return await self._run(inline, pixels, self._each_to_mnist, opened, uploads, inline)

    async def grey_levels(self, rows: list[list[int]]) -> np.ndarray:
        """Rows of grey levels 0-255 → a 28×28 uint8 image; raises `UploadError`."""
        pixels = len(rows) * max((len(row) for row in rows), default=0)
        return await self._run(pixels <= self.inline_pixels, pixels, _grey_levels_to_mnist, rows)
