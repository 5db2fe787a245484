"""Image preprocessing shared by training, evaluation and serving.

MNIST digits are white on black, size-normalised to fit a 20×20 box (keeping the aspect ratio) and
centred by centre of mass in a 28×28 image. `to_mnist` gives any picture of one digit that form;
`normalize` applies the training set's statistics.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy import ndimage

IMAGE_SIZE = 28
DIGIT_BOX = 20
# Mean and standard deviation of the MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# Ink must stand this many grey levels (of 255) above the background to count as a digit,
INK_CONTRAST = 32
# and cover at least this many pixels, or this fraction of a large picture.
MIN_INK_PIXELS = 4
MIN_INK_FRACTION = 1e-4


class EmptyImageError(ValueError):
    """The picture holds no digit: it is blank or nearly so."""


def _flatten_to_gray(image: Image.Image) -> np.ndarray:
    """Composite any transparency onto white and return grey levels as float32 in [0, 255]."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32)


def _ink(gray: np.ndarray) -> np.ndarray:
    """Ink intensity in [0, 1], bright on dark, with the background (the median level) at 0."""
    background = float(np.median(gray))
    if background > 127:  # dark ink on a light page, as drawn in Paint: invert
        gray, background = 255 - gray, 255 - background
    contrast = float(gray.max()) - background
    if contrast < INK_CONTRAST:
        raise EmptyImageError("The picture is blank: no digit stands out from the background.")
    return np.clip((gray - background) / contrast, 0, 1)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste a digit of at most 20×20 into a 28×28 canvas with its centre of mass in the middle."""
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    height, width = digit.shape
    cy, cx = ndimage.center_of_mass(digit)
    top = int(np.clip(round(IMAGE_SIZE / 2 - cy), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(IMAGE_SIZE / 2 - cx), 0, IMAGE_SIZE - width))
    canvas[top : top + height, left : left + width] = digit
    return canvas


def to_mnist(image: Image.Image) -> np.ndarray:
    """Turn a picture of one digit into a 28×28 uint8 MNIST-style image (white digit on black).

    Raises `EmptyImageError` when there is no digit to find.
    """
    ink = _ink(_flatten_to_gray(image))
    mask = ink > 0.25
    if mask.sum() < max(MIN_INK_PIXELS, MIN_INK_FRACTION * mask.size):
        raise EmptyImageError("The picture is nearly empty: draw or upload a larger digit.")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    factor = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = Image.fromarray(crop * 255).resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(resized, dtype=np.float32), 0, 255)
    return np.round(_centre_by_mass(digit)).astype(np.uint8)


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, 1, H, W) → float32 (N, 1, H, W) in [0, 1]."""
    # Plain torch rather than torchvision's transforms: importing torchvision adds seconds to
    # the API's start-up, and this module is all that serving needs of the pipeline's code.
    if pixels.ndim == 3:
        pixels = pixels.unsqueeze(1)
    return pixels.to(torch.float32) / 255


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Standardise [0, 1] images with the training set's mean and standard deviation."""
    return (images - MNIST_MEAN) / MNIST_STD


def to_model_input(pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 MNIST-style images → the normalised float batch the model takes."""
    return normalize(to_unit(torch.as_tensor(pixels)))
