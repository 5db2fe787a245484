"""Generated real-looking digits for the evaluate stage, and the drawing helpers they share with
the generated non-digits (`pipeline.datagen.non_digit_families`).

Drawn by code (Pillow) with a seed, nothing is downloaded, and run through the API's own
preprocessing (`mnist_core.imaging.to_mnist`), so they measure what a user would see: digits
typeset in the fonts matplotlib ships (DejaVu, STIX, Computer Modern), plain, thick, outlined,
light-on-dark and on transparent backgrounds, placed off-centre on large canvases; and digits
drawn as mouse strokes on a 280×280 canvas, as the web page sends them.

Apart from those, `handwriting` draws the same pen strokes the ways other sources of handwriting
differ from MNIST (`HANDWRITING_KINDS`): a thin or a thick pen, a low-resolution scan upscaled,
a small digit far off-centre on a large sheet, a strong slant. None of it is trained on: the
evaluate stage reports each kind apart.
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
MOUSE_CANVAS = 280  # the web page's drawing canvas
HANDWRITING_KINDS = ("thin_pen", "thick_pen", "low_res_scan", "off_centre", "slanted")


@dataclass(frozen=True)
class Pen:
    """How a hand draws: pen width (pixels on the 280×280 canvas, both ends included), slant
    (degrees; a range above 0 leans either way), the digit's height (pixels) and where its
    centre falls (share of the canvas)."""

    width: tuple[int, int] = (8, 25)
    slant: tuple[float, float] = (-12, 12)
    height: tuple[float, float] = (110, 220)
    centre: tuple[float, float] = (0.35, 0.65)


MOUSE = Pen()


@dataclass(frozen=True)
class Picture:
    kind: str  # the style of the digit
    image: Image.Image
    label: int


@dataclass(frozen=True)
class Preprocessed:
    """A set through `to_mnist`: the 28×28 images of the pictures it accepted, and which those
    were; `rejected` lists the kinds of pictures it found empty (the API answers 422)."""

    images: np.ndarray
    labels: np.ndarray
    kinds: list[str]
    rejected: list[str]


@functools.cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A bundled font at one size, opened once (a set draws hundreds of glyphs)."""
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def blank_canvas(rng: np.random.Generator, mode: str = "RGB") -> Image.Image:
    """A large white (or, for RGBA, fully transparent) canvas of a random landscape size."""
    width, height = int(rng.integers(300, 900)), int(rng.integers(240, 600))
    return Image.new(mode, (width, height), (255, 255, 255, 0) if mode == "RGBA" else "white")


def spot(rng: np.random.Generator, canvas: Image.Image, size: int) -> tuple[int, int]:
    """A random point for a glyph of about `size` pixels, anywhere it fits: off-centre."""
    margin = size // 2 + 4
    return (
        int(rng.integers(margin, max(margin + 1, canvas.width - margin))),
        int(rng.integers(margin, max(margin + 1, canvas.height - margin))),
    )


def typeset(text: str, font: str, style: str, rng: np.random.Generator) -> Image.Image:
    """`text` in `font` and `style` somewhere on a large canvas."""
    mode = "RGBA" if style == "transparent" else "RGB"
    canvas = blank_canvas(rng, mode)
    size = int(rng.integers(60, min(canvas.height, 260)))
    ink, paper = "black", "white"
    if style == "inverted":
        canvas.paste("black", (0, 0, *canvas.size))
        ink, paper = "white", "black"
    stroke = {"thick": max(2, size // 12), "outline": max(2, size // 25)}.get(style, 0)
    ImageDraw.Draw(canvas).text(
        spot(rng, canvas, size),
        text,
        font=_font(font, size),
        fill=paper if style == "outline" else ink,
        stroke_width=stroke,
        stroke_fill=ink,
        anchor="mm",
    )
    return canvas


def arc(
    cx: float, cy: float, rx: float, ry: float, start: float, end: float, points: int = 12
) -> list[tuple[float, float]]:
    """Points on an ellipse from `start` to `end` degrees (0° = right, 90° = down)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start, end, points)
    ]


# Each digit as pen strokes in a unit box (x right, y down), the way people draw it with a mouse.
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [arc(0.5, 0.5, 0.3, 0.45, -90, 270, 24)],
    1: [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)]],
    2: [[*arc(0.5, 0.3, 0.3, 0.25, 200, 380), (0.2, 0.95), (0.85, 0.95)]],
    3: [arc(0.5, 0.28, 0.3, 0.23, 210, 450) + arc(0.5, 0.72, 0.33, 0.23, 270, 510)],
    4: [[(0.65, 0.95), (0.65, 0.05), (0.15, 0.65), (0.85, 0.65)]],
    5: [[(0.8, 0.05), (0.3, 0.05), (0.25, 0.45), *arc(0.5, 0.68, 0.3, 0.27, 230, 500)]],
    6: [[(0.7, 0.05), (0.4, 0.35), *arc(0.5, 0.7, 0.27, 0.25, 200, 560)]],
    7: [[(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)]],
    8: [arc(0.5, 0.28, 0.22, 0.22, 90, 450, 20), arc(0.5, 0.72, 0.27, 0.24, -90, 270, 20)],
    9: [arc(0.5, 0.3, 0.25, 0.25, 0, 360, 20), [(0.75, 0.3), (0.7, 0.95)]],
}


def pen_drawing(
    strokes: list[list[tuple[float, float]]], rng: np.random.Generator, pen: Pen = MOUSE
) -> Image.Image:
    """Pen strokes given in a unit box (x right, y down) drawn with a round pen on the web page's
    transparent canvas, with the wobble, slant and size of a hand (by default, one on a mouse)."""
    canvas = Image.new("RGBA", (MOUSE_CANVAS, MOUSE_CANVAS), (255, 255, 255, 0))
    draw = ImageDraw.Draw(canvas)
    slant = rng.uniform(*pen.slant)
    if pen.slant[0] > 0:
        slant *= rng.choice([-1, 1])
    angle = math.radians(slant)
    scale = rng.uniform(*pen.height)
    centre = rng.uniform(*pen.centre, size=2) * MOUSE_CANVAS
    width = int(rng.integers(pen.width[0], pen.width[1] + 1))
    for stroke in strokes:
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


def mouse_drawing(digit: int, rng: np.random.Generator) -> Image.Image:
    """`digit` drawn with a round pen on the web page's canvas, as a hand on a mouse draws it."""
    return pen_drawing(STROKES[digit], rng)


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


# The hands of `HANDWRITING_KINDS` that only a pen changes; the other two are made below.
PENS = {
    "thin_pen": Pen(width=(3, 6)),
    "thick_pen": Pen(width=(32, 44), height=(170, 230)),
    "slanted": Pen(slant=(20, 32)),
}


def on_paper(drawing: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A transparent-canvas drawing as dark ink on light grey paper (RGB), as a scan has it."""
    paper = Image.new("RGB", drawing.size, (int(rng.integers(200, 245)),) * 3)
    ink = Image.new("RGB", drawing.size, (int(rng.integers(10, 70)),) * 3)
    return Image.composite(ink, paper, drawing.getchannel("A"))


def low_res_scan(strokes: list[list[tuple[float, float]]], rng: np.random.Generator) -> Image.Image:
    """A scan of a 10-18 pixel digit, upscaled with bilinear blur to a few hundred pixels."""
    drawing = on_paper(pen_drawing(strokes, rng), rng)
    small = int(rng.integers(10, 19))
    tiny = drawing.resize((small, small), Image.Resampling.BOX)
    return tiny.resize((small * 16, small * 16), Image.Resampling.BILINEAR)


def off_centre(strokes: list[list[tuple[float, float]]], rng: np.random.Generator) -> Image.Image:
    """A small digit near the left or right edge of a large sheet of grey paper."""
    drawing = pen_drawing(strokes, rng, Pen(height=(90, 140)))
    grey = int(rng.integers(215, 250))
    sheet = Image.new(
        "RGB", (int(rng.integers(700, 1000)), int(rng.integers(500, 800))), (grey,) * 3
    )
    corner = (
        int(rng.choice([0, sheet.width - drawing.width])),
        int(rng.integers(0, sheet.height - drawing.height)),
    )
    sheet.paste(
        (int(rng.integers(10, 70)),) * 3,
        (*corner, corner[0] + drawing.width, corner[1] + drawing.height),
        mask=drawing.getchannel("A"),
    )
    return sheet


def handwriting(seed: int, per_digit: int = 10) -> Iterator[Picture]:
    """`per_digit` drawings of every digit in every one of `HANDWRITING_KINDS`."""
    rng = np.random.default_rng(seed)
    for kind in HANDWRITING_KINDS:
        for _ in range(per_digit):
            for digit in range(10):
                strokes = STROKES[digit]
                if kind == "low_res_scan":
                    image = low_res_scan(strokes, rng)
                elif kind == "off_centre":
                    image = off_centre(strokes, rng)
                else:
                    image = pen_drawing(strokes, rng, PENS[kind])
                yield Picture(kind, image, digit)


def preprocess(pictures: Iterator[Picture]) -> Preprocessed:
    """Run every picture through the API's preprocessing."""
    images, labels, kinds, rejected = [], [], [], []
    for picture in pictures:
        try:
            images.append(to_mnist(picture.image))
        except EmptyImageError:
            rejected.append(picture.kind)
            continue
        labels.append(picture.label)
        kinds.append(picture.kind)
    stacked = np.stack(images) if images else np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return Preprocessed(stacked, np.array(labels, dtype=int), kinds, rejected)
