"""Decode and preprocess request images on a bounded pool of threads, off the event loop.

Every route turns its input into 28×28 MNIST-style images here: bytes → `decode_image` (type,
size and integrity checks) → `mnist_core.imaging.to_mnist`. Failures become `UploadError`s with
the status and sentence the client sees.
"""

from __future__ import annotations

import anyio
import numpy as np
from PIL import Image

from mnist_core.imaging import EmptyImageError, to_mnist
from serving.decode import UploadError, decode_image

MAX_PIXEL_ROWS = 1024


def _mnist_or_422(image: Image.Image) -> np.ndarray:
    try:
        return to_mnist(image)
    except EmptyImageError as error:
        raise UploadError(422, str(error)) from None


def _grey_levels_to_mnist(rows: list[list[int]]) -> np.ndarray:
    widths = {len(row) for row in rows}
    if len(widths) != 1 or not 0 < widths.pop() <= MAX_PIXEL_ROWS:
        raise UploadError(
            422, f"`pixels` must be a rectangle: rows of equal length, 1 to {MAX_PIXEL_ROWS} each."
        )
    array = np.asarray(rows)
    if array.min() < 0 or array.max() > 255:
        raise UploadError(422, "Pixel values must be grey levels from 0 to 255.")
    return _mnist_or_422(Image.fromarray(array.astype(np.uint8), mode="L"))


class Preprocessor:
    """Runs the CPU work of requests on at most `threads` threads of this process."""

    def __init__(self, max_image_pixels: int, threads: int) -> None:
        self.max_image_pixels = max_image_pixels
        self.limiter = anyio.CapacityLimiter(threads)

    def _upload_to_mnist(self, data: bytes) -> np.ndarray:
        return _mnist_or_422(decode_image(data, self.max_image_pixels))

    def _each_to_mnist(self, uploads: list[bytes | UploadError]) -> list[np.ndarray | UploadError]:
        outcomes: list[np.ndarray | UploadError] = []
        for upload in uploads:
            try:
                if isinstance(upload, UploadError):
                    raise upload
                outcomes.append(self._upload_to_mnist(upload))
            except UploadError as error:
                outcomes.append(error)
        return outcomes

    async def upload(self, data: bytes) -> np.ndarray:
        """One uploaded picture → a 28×28 uint8 image; raises `UploadError`."""
        return await anyio.to_thread.run_sync(self._upload_to_mnist, data, limiter=self.limiter)

    async def uploads(self, uploads: list[bytes | UploadError]) -> list[np.ndarray | UploadError]:
        """Several uploads → an image or the error of each, in order (one bad one spoils none)."""
        return await anyio.to_thread.run_sync(self._each_to_mnist, uploads, limiter=self.limiter)

    async def grey_levels(self, rows: list[list[int]]) -> np.ndarray:
        """Rows of grey levels 0-255 → a 28×28 uint8 image; raises `UploadError`."""
        return await anyio.to_thread.run_sync(_grey_levels_to_mnist, rows, limiter=self.limiter)
