"""The preprocessing that turns real pictures into MNIST-style input (shared with serving)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from mnist_core.imaging import MNIST_MEAN, MNIST_STD, EmptyImageError, to_mnist
from pipeline.training.tensors import to_model_input

SEED_IMAGES = sorted((Path(__file__).parent / "data").glob("num_*.png"))


def drawn_digit(
    size=(400, 300), offset=(0, 0), width=18, ink=0, paper=255, mode="L"
) -> Image.Image:
    """A '7' drawn as two strokes, as one would in Paint."""
    image = Image.new(mode, size, paper)
    x, y = size[0] // 2 + offset[0], size[1] // 2 + offset[1]
    draw = ImageDraw.Draw(image)
    draw.line([(x - 50, y - 70), (x + 50, y - 70), (x - 10, y + 80)], fill=ink, width=width)
    return image


@pytest.mark.parametrize("path", SEED_IMAGES, ids=lambda p: p.name)
def test_seed_pictures_become_mnist_like(path: Path) -> None:
    with Image.open(path) as image:
        digit = to_mnist(image)
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    rows, cols = np.nonzero(digit > 0)
    assert rows.max() - rows.min() < 21 and cols.max() - cols.min() < 21  # fits the 20 px box
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) >= 18
    cy, cx = ndimage.center_of_mass(digit)
    assert abs(cy - 14) < 1.5 and abs(cx - 14) < 1.5
    assert digit[0].max() == 0 and digit[:, 0].max() == 0  # background is black


def test_position_and_scale_do_not_matter() -> None:
    reference = to_mnist(drawn_digit()).astype(float)
    for variant in (drawn_digit(offset=(120, -60)), drawn_digit(size=(1200, 900), width=18)):
        moved = to_mnist(variant).astype(float)
        assert np.abs(moved - reference).mean() < 20


def test_thickness_does_not_move_the_digit() -> None:
    thin, thick = to_mnist(drawn_digit(width=8)), to_mnist(drawn_digit(width=40))
    for digit in (thin, thick):
        cy, cx = ndimage.center_of_mass(digit)
        assert abs(cy - 14) < 1.5 and abs(cx - 14) < 1.5
    overlap = ((thin > 64) & (thick > 64)).sum() / (thin > 64).sum()
    assert overlap > 0.8  # the thin stroke lies inside the thick one
    assert (thick > 64).sum() > 1.3 * (thin > 64).sum()


def test_light_on_dark_and_dark_on_light_agree() -> None:
    dark_ink = to_mnist(drawn_digit(ink=0, paper=255)).astype(float)
    light_ink = to_mnist(drawn_digit(ink=255, paper=0)).astype(float)
    assert np.abs(dark_ink - light_ink).mean() < 1


def test_transparent_background_is_white_paper() -> None:
    transparent = drawn_digit(ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA")
    opaque = drawn_digit()
    assert np.abs(to_mnist(transparent).astype(float) - to_mnist(opaque)).mean() < 1


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (200, 200), 255),
        Image.new("RGB", (50, 80), (0, 0, 0)),
        Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
    ],
    ids=["white", "black", "transparent"],
)
def test_blank_pictures_are_refused(image: Image.Image) -> None:
    with pytest.raises(EmptyImageError):
        to_mnist(image)


def test_a_speck_is_not_a_digit() -> None:
    image = Image.new("L", (1000, 1000), 255)
    image.putpixel((500, 500), 0)
    with pytest.raises(EmptyImageError, match="nearly empty"):
        to_mnist(image)


def test_model_input_is_normalised() -> None:
    """Grey levels 0-255 → (level / 255 - MNIST mean) / MNIST std, as in training."""
    pixels = np.zeros((2, 28, 28), np.uint8)
    pixels[1] = 255
    pixels[1, 0, :3] = (0, 51, 128)
    batch = to_model_input(pixels).numpy()
    assert batch.shape == (2, 1, 28, 28) and batch.dtype == np.float32
    expected = (pixels[:, np.newaxis] / 255 - MNIST_MEAN) / MNIST_STD
    np.testing.assert_allclose(batch, expected, rtol=1e-5, atol=1e-5)
