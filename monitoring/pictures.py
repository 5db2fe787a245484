"""A logged 28×28 input as a reviewer sees it: a lossless PNG (for the review sheet) or a few
lines of block characters (for the terminal). Made on demand from the stored grey levels,
never stored themselves."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# Terminal cells are about twice as tall as wide: one character shows a 2×2 pooled pixel
# above another (upper half, lower half), so the 28×28 input is 14 characters by 7 lines.
POOL = 2
INK = 96  # a pooled grey level from this on counts as ink
HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def png_bytes(pixels: np.ndarray) -> bytes:
    """The grey levels as an 8-bit greyscale PNG, exactly (PNG is lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_uri(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def block_picture(pixels: np.ndarray) -> list[str]:
    """The input as lines of half-block characters, ink where the model saw strokes."""
    height, width = pixels.shape
    pooled = pixels.reshape(height // POOL, POOL, width // POOL, POOL).mean(axis=(1, 3))
    ink = pooled >= INK
    return [
        "".join(
            HALF_BLOCKS[bool(top), bool(bottom)] for top, bottom in zip(upper, lower, strict=True)
        )
        for upper, lower in zip(ink[0::2], ink[1::2], strict=True)
    ]
