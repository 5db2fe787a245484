"""MNIST-style image preprocessing, shared by training, evaluation and serving.

MNIST digits are white on black, size-normalised to fit a 20×20 box (keeping the aspect ratio) and
centred by centre of mass in a 28×28 image. `to_mnist` gives any picture of one digit that form.

Every whole-picture step (grey levels, background, contrast, the ink's bounding box) is a Pillow
operation on 8-bit pixels, so a large photo or canvas costs about as much as decoding it; float
work starts only on the few hundred pixels of the final 20×20 digit.
"""

from __future__ import annotations

import warnings

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


def _to_gray(image: Image.Image) -> Image.Image:
    """8-bit grey levels, upright, with any transparency composited onto white."""
    image = _upright(image)
    if image.mode.startswith("I") or image.mode == "F":  # 16- or 32-bit grey (a 16-bit PNG)
        levels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(levels.max()), 1.0)
        return Image.fromarray(np.clip(levels * (255 / top), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] == 255:
        return image.convert("L")  # opaque, as the page's canvas is: nothing to composite
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        gray, alpha = image.convert("LA").split()
        return Image.composite(gray, Image.new("L", image.size, 255), alpha)
    return image.convert("L")


def _median_level(histogram: np.ndarray) -> int:
    """The median grey level of an 8-bit picture, from its histogram."""
    cumulative = np.cumsum(histogram)
    return int(np.searchsorted(cumulative, (cumulative[-1] + 1) / 2))


def _ink_levels(histogram: np.ndarray) -> np.ndarray:
    """For each grey level, its ink intensity in [0, 1]: bright on dark, background at 0."""
    background = _median_level(histogram)
    present = np.flatnonzero(histogram)
    darkest, brightest = int(present[0]), int(present[-1])
    levels = LEVELS
    if background > 127:  # dark ink on a light page, as drawn in Paint: invert
        levels, background, brightest = 255 - LEVELS, 255 - background, 255 - darkest
    contrast = float(brightest - background)
    if contrast < INK_CONTRAST:
        raise EmptyImageError("The picture is blank: no digit stands out from the background.")
    return np.clip((levels - background) / contrast, 0, 1)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste a digit of at most 20×20 into a 28×28 canvas with its centre of mass in the middle."""
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    height, width = digit.shape
    total = float(digit.sum())
    cy = float(digit.sum(axis=1) @ np.arange(height)) / total
    cx = float(digit.sum(axis=0) @ np.arange(width)) / total
    top = int(np.clip(round(IMAGE_SIZE / 2 - cy), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(IMAGE_SIZE / 2 - cx), 0, IMAGE_SIZE - width))
    canvas[top : top + height, left : left + width] = digit
    return canvas


def to_mnist(image: Image.Image) -> np.ndarray:
    """Turn a picture of one digit into a 28×28 uint8 MNIST-style image (white digit on black).

    Raises `EmptyImageError` when there is no digit to find.
    """
    gray = _to_gray(image)
    # One pass over the picture gives the background, the extremes and the ink's pixel count.
    histogram = np.array(gray.histogram())
    ink_levels = _ink_levels(histogram)
    is_ink = ink_levels > INK_THRESHOLD
    ink_pixels = int(histogram[is_ink].sum())
    if ink_pixels < max(MIN_INK_PIXELS, MIN_INK_FRACTION * gray.width * gray.height):
        raise EmptyImageError("The picture is nearly empty: draw or upload a larger digit.")
    box = gray.point(is_ink.astype(np.uint8).tolist()).getbbox()
    # Grey levels become ink intensities on the digit's box only, not on the whole picture.
    crop = gray.crop(box).point(np.round(ink_levels * 255).astype(np.uint8).tolist())
    factor = DIGIT_BOX / max(crop.size)
    size = (max(1, round(crop.width * factor)), max(1, round(crop.height * factor)))
    # `reducing_gap` first shrinks a large crop by whole pixels (cheap), then filters the rest.
    digit = crop.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.round(_centre_by_mass(np.asarray(digit, dtype=np.float32))).astype(np.uint8)


def grey_levels_to_mnist(levels: np.ndarray) -> np.ndarray:
    """Rows of grey levels 0-255 (any size, any polarity) → a 28×28 MNIST-style image: what
    `/predict/pixels` does with its body, and what the evaluate stage measures it with."""
    return to_mnist(Image.fromarray(np.asarray(levels, dtype=np.uint8), mode="L"))
