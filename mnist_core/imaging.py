"""MNIST-style image preprocessing, shared by training, evaluation and serving.

MNIST digits are white on black, size-normalised to fit a 20×20 box (keeping the aspect ratio) and
centred by centre of mass in a 28×28 image. `to_mnist` gives any picture of one digit that form.

Every whole-picture step (grey levels, background, contrast, the ink's bounding box) is a Pillow
or vectorised numpy pass over 8-bit pixels, so a large photo or canvas costs about as much as
decoding it; float work starts only on the few hundred pixels of the final 20×20 digit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps

IMAGE_SIZE = 28
DIGIT_BOX = 20
# Mean and standard deviation of the MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# Ink must stand this many grey levels (of 255) above the background to count as a digit,
INK_CONTRAST = 32
# and cover at least this many pixels, or this fraction of a large picture,
MIN_INK_PIXELS = 4
MIN_INK_FRACTION = 1e-4
# where a pixel is ink when it is at least this far from the background towards the darkest ink.
INK_THRESHOLD = 0.25

LEVELS = np.arange(256, dtype=np.float32)


class EmptyImageError(ValueError):
    """The picture holds no digit: it is blank or nearly so."""


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, if any; a malformed EXIF block counts as none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns, then sometimes raises, on bad EXIF
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            return ImageOps.exif_transpose(image) if orientation != 1 else image
    except Exception:  # Pillow raises many kinds on broken EXIF; the pixels are still good
        return image


# A pixel of these modes, read as one little-endian integer, is opaque at or above this value
# (its last byte, the alpha, at 255).
OPAQUE_ALPHA = {"RGBA": ("<u4", 0xFF000000), "LA": ("<u2", 0xFF00)}


def opaque_pixels(pixels: bytes | np.ndarray, mode: str) -> bool:
    """Whether every pixel of RGBA or LA `pixels` (`mode`'s bytes, in any buffer: a decoder's
    array as well) is opaque: one vectorised pass over them."""
    dtype, opaque = OPAQUE_ALPHA[mode]
    values = np.frombuffer(pixels, dtype)
    return values.size > 0 and bool(values.min() >= opaque)


def _to_gray(image: Image.Image) -> Image.Image:
    """8-bit grey levels, upright, with any transparency composited onto white."""
    image = _upright(image)
    if image.mode.startswith("I") or image.mode == "F":  # 16- or 32-bit grey (a 16-bit PNG)
        levels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(levels.max()), 1.0)
        return Image.fromarray(np.clip(levels * (255 / top), 0, 255).astype(np.uint8))
    # One pass over Pillow's bytes (copying the alpha out with Pillow first costs twice as much).
    if image.mode in OPAQUE_ALPHA and opaque_pixels(image.tobytes(), image.mode):
        return image.convert("L")  # opaque (a large or Pillow-decoded picture): no compositing
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        gray, alpha = image.convert("LA").split()
        return Image.composite(gray, Image.new("L", image.size, 255), alpha)
    return image.convert("L")


def _median_level(levels: np.ndarray, darkest: int, brightest: int) -> int:
    """The median grey level of 8-bit `levels` (the smallest level at or below which half the
    pixels lie, rounding up), found by counting rather than by a histogram: a drawing's page is
    one level, the median one of its extremes, and a count or two settles it (a histogram of a
    page of one level is a slow chain of increments to one bin); else a binary search."""
    half = (levels.size + 1) / 2
    if np.count_nonzero(levels < brightest) < half:
        return brightest
    if np.count_nonzero(levels <= darkest) >= half:
        return darkest
    low, high = darkest, brightest - 1  # the median is in [low, high]
    while low < high:
        middle = (low + high) // 2
        if np.count_nonzero(levels <= middle) >= half:
            high = middle
        else:
            low = middle + 1
    return low


@dataclass(frozen=True)
class _Ink:
    """How a picture's grey levels read as ink: each level's intensity in [0, 1] (bright on
    dark, the background at 0), and the levels that count as ink: those at or past `edge` on the
    ink's side of the background."""

    intensity: np.ndarray
    edge: int
    dark_on_light: bool

    def mask(self, levels: np.ndarray) -> np.ndarray:
        return levels <= self.edge if self.dark_on_light else levels >= self.edge


def _ink(levels: np.ndarray, darkest: int, brightest: int) -> _Ink:
    """The ink of a picture with grey `levels` between `darkest` and `brightest`."""
    background = _median_level(levels, darkest, brightest)
    intensity, dark_on_light = LEVELS, background > 127
    if dark_on_light:  # dark ink on a light page, as drawn in Paint: invert
        intensity, background, brightest = 255 - LEVELS, 255 - background, 255 - darkest
    contrast = float(brightest - background)
    if contrast < INK_CONTRAST:
        raise EmptyImageError("The picture is blank: no digit stands out from the background.")
    intensity = np.clip((intensity - background) / contrast, 0, 1)
    # Intensity grows monotonically away from the background, so the ink is one run of levels.
    is_ink = np.flatnonzero(intensity > INK_THRESHOLD)
    return _Ink(intensity, int(is_ink[-1] if dark_on_light else is_ink[0]), dark_on_light)


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The box (left, upper, right, lower) of the true pixels of a 2-D mask with at least one."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste a digit of at most 20×20 into a 28×28 canvas with its centre of mass in the middle."""
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    height, width = digit.shape
    total = float(digit.sum())
    cy = float(digit.sum(axis=1) @ np.arange(height)) / total
    cx = float(digit.sum(axis=0) @ np.arange(width)) / total
    # Python's min and max: np.clip on a scalar costs more than the rest of this function.
    top = min(max(round(IMAGE_SIZE / 2 - cy), 0), IMAGE_SIZE - height)
    left = min(max(round(IMAGE_SIZE / 2 - cx), 0), IMAGE_SIZE - width)
    canvas[top : top + height, left : left + width] = digit
    return canvas


def to_mnist(image: Image.Image) -> np.ndarray:
    """Turn a picture of one digit into a 28×28 uint8 MNIST-style image (white digit on black).

    Raises `EmptyImageError` when there is no digit to find.
    """
    gray = _to_gray(image)
    levels = np.asarray(gray)
    ink = _ink(levels, *gray.getextrema())
    is_ink = ink.mask(levels)
    if np.count_nonzero(is_ink) < max(MIN_INK_PIXELS, MIN_INK_FRACTION * levels.size):
        raise EmptyImageError("The picture is nearly empty: draw or upload a larger digit.")
    # Grey levels become ink intensities on the digit's box only, not on the whole picture (a
    # numpy lookup: Pillow's `point` rounds its 256-entry table in Python on every call).
    left, upper, right, lower = _bounding_box(is_ink)
    table = np.round(ink.intensity * 255).astype(np.uint8)
    crop = Image.fromarray(np.take(table, levels[upper:lower, left:right]))
    factor = DIGIT_BOX / max(crop.size)
    size = (max(1, round(crop.width * factor)), max(1, round(crop.height * factor)))
    # `reducing_gap` first shrinks a large crop by whole pixels (cheap), then filters the rest.
    digit = crop.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.round(_centre_by_mass(np.asarray(digit, dtype=np.float32))).astype(np.uint8)


def grey_levels_to_mnist(levels: np.ndarray) -> np.ndarray:
    """Rows of grey levels 0-255 (any size, any polarity) → a 28×28 MNIST-style image: what
    `/predict/pixels` does with its body, and what the evaluate stage measures it with."""
    return to_mnist(Image.fromarray(np.asarray(levels, dtype=np.uint8), mode="L"))
