"""The decode pool does a request's small PNGs on the event loop (decoded by libspng) and other
pictures on its threads (decoded by Pillow, which releases the GIL), within the pending-pixels
budget."""

from __future__ import annotations

import io
import threading

import anyio
import numpy as np
import pytest
from PIL import Image, ImageDraw

from serving.decode import UploadError
from serving.decode_pool import INLINE_BYTES, DecodePool
from serving.settings import ServingSettings


def drawing(side: int, format: str = "PNG", **options: object) -> bytes:
    picture = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(picture).line([(side // 4, side // 5), (side // 2, side * 4 // 5)], "black",
                                 max(1, side // 15))  # fmt: skip
    buffer = io.BytesIO()
    picture.save(buffer, format=format, **options)
    return buffer.getvalue()


class Recording(DecodePool):
    """A pool that notes on which thread each picture was decoded, and by which decoder."""

    def __init__(self, *arguments: int) -> None:
        super().__init__(*arguments)
        self.threads: list[int] = []
        self.libspng: list[bool] = []

    def _load_to_mnist(self, image: Image.Image, data: bytes, libspng: bool) -> np.ndarray:
        self.threads.append(threading.get_ident())
        self.libspng.append(libspng)
        return super()._load_to_mnist(image, data, libspng)


def decoded_on_loop(pool: Recording, *uploads: bytes) -> list[bool]:
    async def main() -> list[bool]:
        loop_thread = threading.get_ident()
        if len(uploads) == 1:
            await pool.upload(uploads[0])
        else:
            await pool.uploads(list(uploads))
        return [thread == loop_thread for thread in pool.threads]

    return anyio.run(main)


def test_the_default_keeps_the_pages_canvas_on_the_event_loop() -> None:
    assert ServingSettings().decode_inline_pixels >= 280 * 280


def test_a_small_png_is_decoded_on_the_event_loop_and_a_large_one_on_a_thread() -> None:
    small = Recording(10**8, 2, 10**8, 280 * 280)
    assert decoded_on_loop(small, drawing(280)) == [True]
    assert small.libspng == [True]  # libspng holds the GIL: only where that costs nothing
    large = Recording(10**8, 2, 10**8, 280 * 280)
    assert decoded_on_loop(large, drawing(300)) == [False]
    assert large.libspng == [False]
    assert decoded_on_loop(Recording(10**8, 2, 10**8, 0), drawing(28)) == [False]


def test_a_small_jpeg_or_a_png_of_many_bytes_goes_to_a_thread() -> None:
    # a JPEG's decoding costs what its scans do, not its pixels
    assert decoded_on_loop(Recording(10**8, 2, 10**8, 10**6), drawing(64, "JPEG")) == [False]
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > INLINE_BYTES
    pool = Recording(10**8, 2, 10**8, 10**6)
    assert decoded_on_loop(pool, buffer.getvalue()) == [False]
    assert pool.libspng == [False]


def test_a_batch_counts_all_its_pixels() -> None:
    small = drawing(28)
    assert decoded_on_loop(Recording(10**8, 2, 10**8, 28 * 28 * 16), *[small] * 16) == [True] * 16
    assert decoded_on_loop(Recording(10**8, 2, 10**8, 28 * 28 * 15), *[small] * 16) == [False] * 16


def test_grey_levels_on_the_event_loop_give_the_same_digit() -> None:
    rows = np.zeros((28, 28), np.uint8)
    rows[5:23, 12:16] = 255

    async def both() -> tuple[np.ndarray, np.ndarray]:
        inline = await DecodePool(10**8, 2, 10**8, 28 * 28).grey_levels(rows.tolist())
        threaded = await DecodePool(10**8, 2, 10**8, 0).grey_levels(rows.tolist())
        return inline, threaded

    inline, threaded = anyio.run(both)
    np.testing.assert_array_equal(inline, threaded)


def test_a_bad_small_picture_is_still_its_sentence() -> None:
    async def main() -> None:
        await DecodePool(10**8, 2, 10**8, 10**6).upload(drawing(28)[:60])

    with pytest.raises(UploadError) as refused:
        anyio.run(main)
    assert refused.value.status_code == 422
