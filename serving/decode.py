"""Turning untrusted upload bytes into a picture: type, size and integrity checks, in memory.

Two steps, so that the cost of a picture is known before it is paid: `open_image` reads only
the header (cheap, safe on the event loop) and refuses what is not an accepted image or is too
large; `load_image` decodes the pixels (on the event loop for a small picture, else on a worker
thread: `decode_pool`). Pillow reads every format; on the event loop the common PNG, 8-bit RGB or
RGBA as the page's canvas sends, is decoded by libspng (`pyspng`) to the same pixels in a third
of the time.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist_core.imaging import opaque_pixels

try:  # wheels for Linux, Windows and Apple silicon; elsewhere Pillow decodes every PNG
    import pyspng
except ImportError:  # pragma: no cover - the lock files install it where it has a wheel
    pyspng = None

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


CORRUPT = "The image is corrupt or truncated and could not be decoded."
# Chunks that change what Pillow makes of the pixels (EXIF orientation, also as a text chunk or
# in XMP), anywhere in the file: a PNG holding one is left to Pillow.
PNG_PILLOW_CHUNKS = (b"eXIf", b"Raw profile type exif", b"XML:com.adobe.xmp")


def _libspng_decodes(image: Image.Image, data: bytes) -> bool:
    """Whether libspng gives this picture exactly Pillow's pixels: a still, non-interlaced
    8-bit RGB or RGBA PNG (Pillow's raw mode is then the mode itself; 16 bits read "RGB;16B")
    without a transparent colour or EXIF."""
    return (
        pyspng is not None
        and image.format == "PNG"
        and image.mode in ("RGB", "RGBA")
        and len(image.tile) == 1
        and image.tile[0].args == image.mode
        and "interlace" not in image.info
        and "transparency" not in image.info
        and not getattr(image, "is_animated", False)
        and not any(chunk in data for chunk in PNG_PILLOW_CHUNKS)
    )


def _from_libspng(pixels: np.ndarray) -> Image.Image:
    """libspng's (H, W, 3 or 4) array as a picture, sharing its memory. An RGBA picture whose
    alpha is 255 everywhere (the page's canvas) comes out as RGBX, the same colours with the
    fourth byte unused: there is nothing to composite, and `to_mnist` need not copy the picture
    out again to find that out (one pass over the array here: about 5 µs for the canvas, where
    the copy and its check took 28 µs)."""
    height, width, channels = pixels.shape
    if channels == 4 and opaque_pixels(pixels, "RGBA"):
        return Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
    return Image.fromarray(pixels)


def load_image(image: Image.Image, data: bytes, libspng: bool = False) -> Image.Image:
    """Decode the pixels of an image `open_image` made of `data` (the first frame of an
    animation). With `libspng`, a PNG libspng reads exactly as Pillow does is decoded by it, in
    a third of the time but holding the GIL throughout (Pillow's decoder releases it): for
    pictures decoded on the event loop, where that costs nothing more. A PNG libspng refuses is
    left to Pillow, which is more lenient. An opaque RGBA picture decoded by libspng comes out
    as RGBX (see `_from_libspng`): convert it before saving it (PNG cannot hold RGBX).

    422: corrupt or truncated.
    """
    if libspng and _libspng_decodes(image, data):
        try:
            return _from_libspng(np.ascontiguousarray(pyspng.load(data, image.mode)))
        except RuntimeError:  # pyspng's only error: Pillow says whether the file is usable
            pass
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
        raise UploadError(422, CORRUPT) from None
    return image


def decode_image(data: bytes, max_pixels: int, libspng: bool = True) -> Image.Image:
    """`open_image`, then `load_image`: the whole check and decode in one call."""
    return load_image(open_image(data, max_pixels), data, libspng)
