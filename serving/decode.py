"""Turning untrusted upload bytes into a picture: type, size and integrity checks, in memory.

Two steps, so that the cost of a picture is known before it is paid: `open_image` reads only
the header (cheap, safe on the event loop) and refuses what is not an accepted image or is too
large; `load_image` decodes the pixels (on a worker thread).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
# A JPEG is decoded at a reduced scale (1/2 to 1/8, which its format makes nearly free) so that
# its longest side stays at least this long: plenty for a digit.
JPEG_DRAFT_SIDE = 1024


class UploadError(ValueError):
    """An upload that cannot be used, with the HTTP status and a sentence for the person."""

    def __init__(
        self, status_code: int, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read an image's header, refusing anything that is not a sane picture of a sane size.

    415: not an image of an accepted type; 413: too many pixels (from the header, so a
    decompression bomb is never expanded); 422: empty.
    """
    if not data:
        raise UploadError(422, "The uploaded file is empty.")
    too_large = f"the limit is {max_pixels / 1e6:g} megapixels. Scale it down and try again."
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise UploadError(
            415, "That file is not an image we can read: upload a PNG, JPEG, BMP, GIF or WebP."
        ) from None
    except Image.DecompressionBombError:  # Pillow's own, larger limit, checked in `open`
        raise UploadError(413, f"The image is far too large: {too_large}") from None
    except (OSError, SyntaxError, ValueError, EOFError):  # a header that lies about itself
        raise UploadError(422, "The image's header is corrupt: it could not be read.") from None
    width, height = image.size
    if image.format == "JPEG" and max(width, height) > JPEG_DRAFT_SIDE:
        scale = JPEG_DRAFT_SIDE / max(width, height)
        image.draft(image.mode, (max(1, round(width * scale)), max(1, round(height * scale))))
    if image.width * image.height > max_pixels:
        raise UploadError(413, f"The image is {width}×{height} pixels; {too_large}")
    return image


def load_image(image: Image.Image) -> Image.Image:
    """Decode the pixels of an image from `open_image` (the first frame of an animation).

    422: corrupt or truncated.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(0)
            image.load()
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ):
        raise UploadError(
            422, "The image is corrupt or truncated and could not be decoded."
        ) from None
    return image


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """`open_image`, then `load_image`: the whole check and decode in one call."""
    return load_image(open_image(data, max_pixels))
