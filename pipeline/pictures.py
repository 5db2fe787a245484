"""Generated pictures that are not MNIST, for the evaluate stage: real-looking digits, non-digits.

Both sets are drawn by code (Pillow) with a seed, nothing is downloaded, and both go through the
API's own preprocessing (`mnist_core.imaging.to_mnist`), so they measure what a user would see:

- *real pictures*: digits typeset in the fonts matplotlib ships (DejaVu, STIX, Computer Modern),
  plain, thick, outlined, light-on-dark and on transparent backgrounds, placed off-centre on large
  canvases; and digits drawn as mouse strokes on a 280×280 canvas, as the web page sends them;
- *non-digits*: letters, shapes, scribbles, noise and nearly blank pictures, which the API should
  flag as `uncertain` (or reject as empty).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_core.imaging import IMAGE_SIZE, EmptyImageError, to_mnist

FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf",
)  # fmt: skip
FONT_STYLES = ("plain", "thick", "outline", "inverted", "transparent")
# Letters that no reasonable reader takes for a digit (no O, I, l, S, Z, B, G, q, …).
LETTERS = "ACEFHKMNRWXYaehkmnrwx"
NON_DIGIT_KINDS = ("letter", "shape", "scribble", "noise", "blank")
MOUSE_CANVAS = 280  # the web page's drawing canvas


@dataclass(frozen=True)
class Picture:
    kind: str  # the style of a digit, or the kind of non-digit
    image: Image.Image
    label: int | None = None  # the digit drawn; None for a non-digit


@dataclass(frozen=True)
class Preprocessed:
    """A set through `to_mnist`: the 28×28 images of the pictures it accepted, and which those
    were; `rejected` lists the kinds of pictures it found empty (the API answers 422)."""

    images: np.ndarray
    labels: np.ndarray  # -1 for non-digits
    kinds: list[str]
    rejected: list[str]


@functools.cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A bundled font at one size, opened once (a set draws hundreds of glyphs)."""
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def _canvas(rng: np.random.Generator, mode: str = "RGB") -> Image.Image:
    """A large white (or, for RGBA, fully transparent) canvas of a random landscape size."""
    width, height = int(rng.integers(300, 900)), int(rng.integers(240, 600))
    return Image.new(mode, (width, height), (255, 255, 255, 0) if mode == "RGBA" else "white")


def _spot(rng: np.random.Generator, canvas: Image.Image, size: int) -> tuple[int, int]:
    """A random point for a glyph of about `size` pixels, anywhere it fits: off-centre."""
    margin = size // 2 + 4
    return (
        int(rng.integers(margin, max(margin + 1, canvas.width - margin))),
        int(rng.integers(margin, max(margin + 1, canvas.height - margin))),
    )


def typeset(text: str, font: str, style: str, rng: np.random.Generator) -> Image.Image:
    """`text` in `font` and `style` somewhere on a large canvas."""
    mode = "RGBA" if style == "transparent" else "RGB"
    canvas = _canvas(rng, mode)
    size = int(rng.integers(60, min(canvas.height, 260)))
    ink, paper = "black", "white"
    if style == "inverted":
        canvas.paste("black", (0, 0, *canvas.size))
        ink, paper = "white", "black"
    stroke = {"thick": max(2, size // 12), "outline": max(2, size // 25)}.get(style, 0)
    ImageDraw.Draw(canvas).text(
        _spot(rng, canvas, size),
        text,
        font=_font(font, size),
        fill=paper if style == "outline" else ink,
        stroke_width=stroke,
        stroke_fill=ink,
        anchor="mm",
    )
    return canvas


def _arc(
    cx: float, cy: float, rx: float, ry: float, start: float, end: float, points: int = 12
) -> list[tuple[float, float]]:
    """Points on an ellipse from `start` to `end` degrees (0° = right, 90° = down)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start, end, points)
    ]


# Each digit as pen strokes in a unit box (x right, y down), the way people draw it with a mouse.
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0.5, 0.5, 0.3, 0.45, -90, 270, 24)],
    1: [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)]],
    2: [[*_arc(0.5, 0.3, 0.3, 0.25, 200, 380), (0.2, 0.95), (0.85, 0.95)]],
    3: [_arc(0.5, 0.28, 0.3, 0.23, 210, 450) + _arc(0.5, 0.72, 0.33, 0.23, 270, 510)],
    4: [[(0.65, 0.95), (0.65, 0.05), (0.15, 0.65), (0.85, 0.65)]],
    5: [[(0.8, 0.05), (0.3, 0.05), (0.25, 0.45), *_arc(0.5, 0.68, 0.3, 0.27, 230, 500)]],
    6: [[(0.7, 0.05), (0.4, 0.35), *_arc(0.5, 0.7, 0.27, 0.25, 200, 560)]],
    7: [[(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)]],
    8: [_arc(0.5, 0.28, 0.22, 0.22, 90, 450, 20), _arc(0.5, 0.72, 0.27, 0.24, -90, 270, 20)],
    9: [_arc(0.5, 0.3, 0.25, 0.25, 0, 360, 20), [(0.75, 0.3), (0.7, 0.95)]],
}


def mouse_drawing(digit: int, rng: np.random.Generator) -> Image.Image:
    """`digit` drawn with a round pen on the web page's transparent canvas, with the wobble,
    slant and size of a hand on a mouse."""
    canvas = Image.new("RGBA", (MOUSE_CANVAS, MOUSE_CANVAS), (255, 255, 255, 0))
    draw = ImageDraw.Draw(canvas)
    angle = math.radians(rng.uniform(-12, 12))
    scale = rng.uniform(110, 220)
    centre = rng.uniform(0.35, 0.65, size=2) * MOUSE_CANVAS
    width = int(rng.integers(8, 26))
    for stroke in STROKES[digit]:
        points = np.array(stroke) - 0.5 + rng.normal(0, 0.02, size=(len(stroke), 2))
        x = points[:, 0] * math.cos(angle) - points[:, 1] * math.sin(angle)
        y = points[:, 0] * math.sin(angle) + points[:, 1] * math.cos(angle)
        xy = [(float(a), float(b)) for a, b in zip(x * scale * 0.8, y * scale, strict=True)]
        xy = [(centre[0] + a, centre[1] + b) for a, b in xy]
        draw.line(xy, fill=(0, 0, 0, 255), width=width, joint="curve")
        for point in (xy[0], xy[-1]):  # round pen ends
            r = width / 2
            draw.ellipse((point[0] - r, point[1] - r, point[0] + r, point[1] + r), fill="black")
    return canvas


def real_pictures(seed: int, mouse_per_digit: int = 20) -> Iterator[Picture]:
    """Every digit in every font and style, then `mouse_per_digit` mouse drawings of each."""
    rng = np.random.default_rng(seed)
    for font in FONTS:
        for style in FONT_STYLES:
            for digit in range(10):
                yield Picture(style, typeset(str(digit), font, style, rng), digit)
    for _ in range(mouse_per_digit):
        for digit in range(10):
            yield Picture("mouse", mouse_drawing(digit, rng), digit)


def _shape(rng: np.random.Generator) -> Image.Image:
    canvas = _canvas(rng)
    draw = ImageDraw.Draw(canvas)
    size = int(rng.integers(60, min(canvas.height, 240)))
    x, y = _spot(rng, canvas, size)
    box = (x - size // 2, y - size // 2, x + size // 2, y + size // 2)
    width = int(rng.integers(3, 15))
    filled = rng.random() < 0.5
    match int(rng.integers(5)):
        case 0:
            draw.rectangle(box, outline="black", width=width, fill="black" if filled else None)
        case 1:
            rotation = float(rng.uniform(0, 120))
            fill = "black" if filled else None
            draw.regular_polygon((x, y, size // 2), 3, rotation, fill, "black", width)
        case 2:
            draw.regular_polygon((x, y, size // 2), 6, outline="black", width=width)
        case 3:  # a star
            points = _arc(x, y, size / 2, size / 2, -90, 630, 11)[:-1]
            draw.polygon(points[::2] + points[1::2], outline="black", width=width)
        case _:  # a grid of lines: #
            for offset in (-size // 6, size // 6):
                draw.line((x + offset, box[1], x + offset, box[3]), fill="black", width=width)
                draw.line((box[0], y + offset, box[2], y + offset), fill="black", width=width)
    return canvas


def _scribble(rng: np.random.Generator) -> Image.Image:
    canvas = _canvas(rng)
    size = int(rng.integers(80, min(canvas.height, 260)))
    x, y = _spot(rng, canvas, size)
    points = [(x + dx, y + dy) for dx, dy in rng.uniform(-size / 2, size / 2, size=(12, 2))]
    ImageDraw.Draw(canvas).line(points, fill="black", width=int(rng.integers(3, 12)))
    return canvas


def _noise(rng: np.random.Generator) -> Image.Image:
    canvas = _canvas(rng)
    pixels = np.asarray(canvas.convert("L")).copy()
    pixels[rng.random(pixels.shape) < rng.uniform(0.02, 0.3)] = 0
    return Image.fromarray(pixels)


def _blank(rng: np.random.Generator) -> Image.Image:
    """A nearly empty page: a faint smudge or a speck."""
    canvas = _canvas(rng)
    x, y = _spot(rng, canvas, 20)
    r = int(rng.integers(1, 6))
    ImageDraw.Draw(canvas).ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(180, 240)))
    return canvas


def non_digits(seed: int, per_kind: int = 60) -> Iterator[Picture]:
    """`per_kind` pictures of each kind of non-digit."""
    rng = np.random.default_rng(seed)
    makers = {"shape": _shape, "scribble": _scribble, "noise": _noise, "blank": _blank}
    for kind in NON_DIGIT_KINDS:
        for index in range(per_kind):
            if kind == "letter":
                letter = LETTERS[index % len(LETTERS)]
                font, style = FONTS[int(rng.integers(len(FONTS)))], "plain"
                yield Picture(kind, typeset(letter, font, style, rng))
            else:
                yield Picture(kind, makers[kind](rng))


def preprocess(pictures: Iterator[Picture]) -> Preprocessed:
    """Run every picture through the API's preprocessing."""
    images, labels, kinds, rejected = [], [], [], []
    for picture in pictures:
        try:
            images.append(to_mnist(picture.image))
        except EmptyImageError:
            rejected.append(picture.kind)
            continue
        labels.append(-1 if picture.label is None else picture.label)
        kinds.append(picture.kind)
    stacked = np.stack(images) if images else np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return Preprocessed(stacked, np.array(labels, dtype=int), kinds, rejected)
