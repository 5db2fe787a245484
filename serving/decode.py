"""Turning untrusted upload bytes into a picture: type, size and integrity checks, in memory."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")


class UploadError(ValueError):
    """An upload that cannot be used, with the HTTP status and a sentence for the person."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open and fully decode an image from bytes, refusing anything that is not a sane picture.

    415: not an image of an accepted type; 413: too many pixels (checked from the header, before
    decoding, so a decompression bomb is never expanded); 422: empty, corrupt or truncated.
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
    if image.width * image.height > max_pixels:
        raise UploadError(413, f"The image is {image.width}×{image.height} pixels; {too_large}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(0)  # the first frame of an animation
            image.load()
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as error:
        raise UploadError(
            422, f"The image is corrupt or truncated and could not be decoded ({error})."
        ) from None
    return image
