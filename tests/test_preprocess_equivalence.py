"""`to_mnist`'s fast path gives exactly what its definition says, pixel for pixel.

`to_mnist` takes shortcuts that must not change a single grey level: an opaque RGBA picture
(the page's canvas) skips compositing onto white, the background (the median level) is found by
counting pixels at or below a few levels rather than by sorting or a histogram, the ink is one
run of levels found by one comparison, and the ink intensities are looked up on the digit's box
only. The reference
below is the definition spelled out over whole numpy arrays, with none of those shortcuts; both
must agree on pictures of every mode, polarity, size and background the API accepts.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from mnist_core.imaging import (
    DIGIT_BOX,
    INK_CONTRAST,
    INK_THRESHOLD,
    MIN_INK_FRACTION,
    MIN_INK_PIXELS,
    EmptyImageError,
    _centre_by_mass,
    _upright,
    to_mnist,
)


def reference_to_mnist(image: Image.Image) -> np.ndarray:
    """The definition: composite any transparency onto white, take the median grey level as the
    background, scale the ink between it and the farthest level, crop to the pixels above the
    threshold, fit the crop into 20×20 and centre it by mass."""
    image = _upright(image)
    if image.mode.startswith("I") or image.mode == "F":
        levels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(levels.max()), 1.0)
        gray = np.clip(levels * (255 / top), 0, 255).astype(np.uint8)
    elif image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        grey, alpha = image.convert("LA").split()
        gray = np.asarray(Image.composite(grey, Image.new("L", image.size, 255), alpha))
    else:
        gray = np.asarray(image.convert("L"))
    # the median: the smallest level that at least half the pixels (rounded up) do not exceed
    background = int(np.sort(gray, axis=None)[gray.size // 2])
    values = gray.astype(np.float32)
    if background > 127:
        values, background, farthest = 255 - values, 255 - background, 255 - int(gray.min())
    else:
        farthest = int(gray.max())
    contrast = float(farthest - background)
    if contrast < INK_CONTRAST:
        raise EmptyImageError("blank")
    intensity = np.clip((values - background) / contrast, 0, 1)
    mask = intensity > INK_THRESHOLD
    if mask.sum() < max(MIN_INK_PIXELS, MIN_INK_FRACTION * gray.size):
        raise EmptyImageError("nearly empty")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = np.round(intensity * 255).astype(np.uint8)[
        rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1
    ]
    height, width = crop.shape
    factor = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    digit = Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.round(_centre_by_mass(np.asarray(digit, dtype=np.float32))).astype(np.uint8)


def drawn_digit(seed: int, side: int, ink: int, paper: int, width: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    picture = Image.new("L", (side, side), paper)
    points = [tuple(int(v) for v in rng.integers(side // 8, side - side // 8, 2)) for _ in range(4)]
    ImageDraw.Draw(picture).line(points, fill=ink, width=width, joint="curve")
    return picture


def coloured(picture: Image.Image, seed: int) -> Image.Image:
    """`picture`'s ink in random colours, its paper in another: R, G and B all differ."""
    rng = np.random.default_rng(seed)
    ink = np.asarray(picture) < 128
    rgb = np.empty((*ink.shape, 3), np.uint8)
    rgb[ink] = rng.integers(0, 160, (int(ink.sum()), 3))
    rgb[~ink] = rng.integers(170, 256, 3)
    return Image.fromarray(rgb)


def pictures() -> list[tuple[str, Image.Image]]:
    cases: list[tuple[str, Image.Image]] = []
    for seed in range(12):
        side = [28, 64, 280, 517][seed % 4]
        dark_on_light = drawn_digit(seed, side, 0, 255, max(1, side // 15))
        light_on_dark = drawn_digit(seed, side, 250, 10, max(1, side // 12))
        cases += [
            (f"L-dark-on-light-{seed}", dark_on_light),
            (f"L-light-on-dark-{seed}", light_on_dark),
            (f"RGB-{seed}", Image.merge("RGB", [dark_on_light] * 3)),
            # the page's canvas: opaque RGBA, black strokes on white
            (f"RGBA-opaque-{seed}", dark_on_light.convert("RGBA")),
            (f"LA-opaque-{seed}", dark_on_light.convert("LA")),
            # coloured strokes on an opaque sheet: the two ways to grey must weigh R, G, B alike
            (f"RGBA-opaque-coloured-{seed}", coloured(dark_on_light, seed).convert("RGBA")),
            (f"blurred-{seed}", dark_on_light.filter(ImageFilter.GaussianBlur(side / 60))),
        ]
        # strokes on a transparent sheet: the ink is only in the alpha channel
        sheet = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        sheet.putalpha(Image.eval(dark_on_light, lambda v: 255 - v))
        cases.append((f"RGBA-transparent-{seed}", sheet))
        half = dark_on_light.convert("RGBA")
        alpha = np.full((side, side), 255, np.uint8)
        alpha[: side // 3] = 254  # one level short of opaque: must be composited
        half.putalpha(Image.fromarray(alpha))
        cases.append((f"RGBA-nearly-opaque-{seed}", half))
        cases.append((f"LA-nearly-opaque-{seed}", half.convert("LA")))
        noisy = np.clip(
            np.asarray(dark_on_light, np.int16)
            + np.random.default_rng(seed).integers(-20, 21, (side, side)),
            0,
            255,
        ).astype(np.uint8)
        cases.append((f"noisy-{seed}", Image.fromarray(noisy)))
        palette = dark_on_light.convert("P")
        palette.info["transparency"] = 0
        cases.append((f"P-transparency-{seed}", palette))
        cases.append((f"I16-{seed}", Image.fromarray(np.asarray(light_on_dark, np.uint16) * 257)))
        cases.append((f"1-bit-{seed}", dark_on_light.convert("1")))
    # backgrounds that are neither extreme, for the median's search: a grey page with specks
    # brighter and darker than it, and pictures whose median sits on a boundary between levels
    for seed, paper in enumerate((60, 127, 128, 200)):
        page = np.asarray(drawn_digit(seed, 90, 20 if paper > 127 else 240, paper, 6)).copy()
        page[np.random.default_rng(seed).random(page.shape) < 0.05] = 255 if paper > 127 else 0
        cases.append((f"grey-page-{paper}", Image.fromarray(page)))
    for side, dark in ((40, 800), (40, 801), (41, 840), (41, 841)):
        levels = np.full(side * side, 230, np.uint8)
        levels[:dark] = 10  # about half the pixels dark: the median is one side or the other
        cases.append((f"half-dark-{side}-{dark}", Image.fromarray(levels.reshape(side, side))))
    cases.append(("blank", Image.new("L", (100, 100), 128)))
    cases.append(("one-dot", drawn_digit(0, 400, 0, 255, 1).crop((0, 0, 3, 3))))
    return cases


@pytest.mark.parametrize(("name", "picture"), pictures(), ids=[name for name, _ in pictures()])
def test_to_mnist_equals_its_definition(name: str, picture: Image.Image) -> None:
    try:
        expected = reference_to_mnist(picture)
    except EmptyImageError:
        with pytest.raises(EmptyImageError):
            to_mnist(picture)
        return
    np.testing.assert_array_equal(to_mnist(picture), expected, err_msg=name)
