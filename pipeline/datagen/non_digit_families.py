"""Generated non-digits in many families: what the model is taught to flag, and how it is measured.

Each family is one *kind* of picture that is not a digit: letters of several alphabets, symbols,
pictographs, geometric shapes, letters and symbols drawn with a pen, pen doodles, scribbles,
noise, and pictures made of digits that are not one digit (two side by side or on top of each
other, one cut up and shuffled). Shapes that
are digits — a bar, a ring — are left out. Every picture goes through the API's own preprocessing
(`mnist_core.imaging.to_mnist`), as a user's upload or drawing would.

Outlier Exposure generalises only as far as the variety of its outliers (Hendrycks et al., 2019),
so whole families are held out of training (`params.yaml: non_digits.held_out`): choices are
made, and the registry gate checks, on kinds of picture the model never saw.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib
import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw
from tqdm import tqdm

from mnist_core.imaging import IMAGE_SIZE, EmptyImageError, to_mnist
from pipeline.data.datasets import NonDigitSet, load_split
from pipeline.datagen import digit_pictures as pictures
from pipeline.io import write_json
from pipeline.params import NonDigitParams

log = logging.getLogger(__name__)

# Characters no reasonable reader takes for a digit: no O, I, l, S, Z, B, G, b, q, g, θ, δ, ∂,
# б, З, nor rings and bars of other scripts (ⵙ, ⵏ).
GLYPHS = {
    "latin_letters": "ACEFHKMNPRUVWXYaefhkmnpruvwx",
    "greek_cyrillic": "ΓΔΛΞΠΣΦΨΩαγεηκλμπφψωЖФЩЮЯДЛПИЦШджфшюя",
    "math_symbols": "+×÷=≠≈∞∑√∇∈∀∃%&@#$€£¥§¶?!*<>{}~^±∩∪⊂⊃∧∨¬",
    "other_scripts": "אבגדהחטכלמנעפצקרשתԱԲԴԵԷԸԹԽԾԿՀՃՄՆՇՊՌՎՓՔՖᐁᐃᐅᐊᐸᑎᑐᑭᒥᓀᓂᓄᔭᔨᕆⴱⴳⴷⴹⴻⴼⴽⵀⵃⵄⵅⵇⵎⵖⵚⵛⵜⵟⵡⵣⵥ",
    "pictographs": "☺☹★☆♠♣♥♦♪♫☀☂☎✓✗✈☯☮♀♂⚓⚡☁❄✿☘⌛⌚✉✂☕←↑→↓↔↕⇐⇒⇔↺↻",
}
GLYPH_STYLES = ("plain", "plain", "thick", "inverted", "transparent")
# Fonts whose character maps are real glyphs (LastResort draws placeholder boxes; the Computer
# Modern fonts map code points to other symbols).
GLYPH_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneral.ttf",
    "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
)  # fmt: skip


@functools.cache
def _fonts_with(char: str) -> tuple[str, ...]:
    """The fonts among `GLYPH_FONTS` that have a glyph for `char`."""
    return tuple(font for font in GLYPH_FONTS if ord(char) in _character_map(font))


@functools.cache
def _drawable(family: str) -> tuple[str, ...]:
    """The family's characters that a bundled font draws (a few pictographs none does): found
    once, at the first draw, not at import and not per picture."""
    return tuple(char for char in GLYPHS[family] if _fonts_with(char))


@functools.cache
def _character_map(font: str) -> frozenset[int]:
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / font
    return frozenset(TTFont(path).getBestCmap())


def _glyph(family: str) -> Callable[[np.random.Generator, np.ndarray], Image.Image]:
    def draw(rng: np.random.Generator, _: np.ndarray) -> Image.Image:
        char = str(rng.choice(_drawable(family)))
        fonts = _fonts_with(char)
        font = fonts[int(rng.integers(len(fonts)))]
        return pictures.typeset(char, font, str(rng.choice(GLYPH_STYLES)), rng)

    return draw


def _polygon(cx: float, cy: float, radius: float, corners: int, turn: float) -> list:
    return [
        (cx + radius * math.cos(turn + 2 * math.pi * k / corners),
         cy + radius * math.sin(turn + 2 * math.pi * k / corners))
        for k in range(corners)
    ]  # fmt: skip


def _shape(rng: np.random.Generator, _: np.ndarray) -> Image.Image:
    """A geometric shape, outlined or filled: no circle or ellipse (a 0), no bar (a 1)."""
    canvas = pictures.blank_canvas(rng)
    draw = ImageDraw.Draw(canvas)
    size = int(rng.integers(60, min(canvas.height, 240)))
    x, y = pictures.spot(rng, canvas, size)
    r, width = size / 2, int(rng.integers(3, 15))
    fill = "black" if rng.random() < 0.4 else None
    turn = float(rng.uniform(0, 2 * math.pi))
    match str(rng.choice(["polygon", "star", "cross", "arrow", "heart", "grid", "crescent"])):
        case "polygon":
            points = _polygon(x, y, r, int(rng.integers(3, 7)), turn)
            draw.polygon(points, fill=fill, outline="black", width=width)
        case "star":
            corners = int(rng.integers(5, 8))
            outer, inner = _polygon(x, y, r, corners, turn), _polygon(x, y, r * 0.45, corners, turn)
            points = [p for pair in zip(outer, inner[corners // 2 :] + inner[: corners // 2],
                                        strict=True) for p in pair]  # fmt: skip
            draw.polygon(points, fill=fill, outline="black", width=width)
        case "cross":
            draw.line((x - r, y, x + r, y), fill="black", width=width * 2)
            draw.line((x, y - r, x, y + r), fill="black", width=width * 2)
        case "arrow":
            draw.line((x - r, y, x + r, y), fill="black", width=width)
            draw.line((x + r, y, x + r / 2, y - r / 2), fill="black", width=width)
            draw.line((x + r, y, x + r / 2, y + r / 2), fill="black", width=width)
        case "heart":
            top = [
                *pictures.arc(x - r / 2, y - r / 4, r / 2, r / 2, 150, 360),
                *pictures.arc(x + r / 2, y - r / 4, r / 2, r / 2, 180, 390),
                (x, y + r),
            ]
            draw.polygon(top, fill=fill, outline="black", width=width)  # fmt: skip
        case "grid":  # #
            for offset in (-r / 3, r / 3):
                draw.line((x + offset, y - r, x + offset, y + r), fill="black", width=width)
                draw.line((x - r, y + offset, x + r, y + offset), fill="black", width=width)
        case _:  # a crescent: a disc with a bite taken out
            draw.ellipse((x - r, y - r, x + r, y + r), fill="black")
            draw.ellipse((x - r / 2, y - r, x + 1.4 * r, y + r), fill="white")
    return canvas


def _scribble(rng: np.random.Generator, _: np.ndarray) -> Image.Image:
    """Pen scribbles: a random zigzag, hatching, a chain of loops or a tangle."""
    kind = str(rng.choice(["tangle", "zigzag", "hatching", "loops"]))
    if kind == "tangle":
        strokes = [[tuple(p) for p in rng.uniform(0, 1, size=(int(rng.integers(8, 16)), 2))]]
    elif kind == "zigzag":
        n = int(rng.integers(6, 11))
        strokes = [[(k / (n - 1), float(k % 2) * 0.5 + 0.25) for k in range(n)]]
    elif kind == "hatching":
        n = int(rng.integers(4, 8))
        strokes = [[(k / n, 0.0), (k / n + 0.3, 1.0)] for k in range(n)]
    else:  # cursive loops, "eeee"
        n = int(rng.integers(4, 7))
        strokes = [[(k / n + 0.12 * math.cos(t) + t / (2 * math.pi * n), 0.5 + 0.25 * math.sin(t))
                    for k in range(n) for t in np.linspace(0, 2 * math.pi, 10)]]  # fmt: skip
    return pictures.pen_drawing(strokes, rng)


def _doodle(rng: np.random.Generator, _: np.ndarray) -> Image.Image:
    """A little pen drawing of a thing: a face, a house, a tree, a sun, a spiral, …"""
    return pictures.pen_drawing(DOODLES[str(rng.choice(list(DOODLES)))], rng)


Strokes = list[list[tuple[float, float]]]


def _face(smile: bool) -> Strokes:
    mouth = pictures.arc(
        0.5, 0.52 if smile else 0.72, 0.2, 0.12, *((20, 160) if smile else (200, 340)), 8
    )
    eyes = [pictures.arc(x, 0.38, 0.03, 0.03, 0, 360, 6) for x in (0.35, 0.65)]
    return [pictures.arc(0.5, 0.5, 0.45, 0.45, 0, 360, 24), mouth, *eyes]


def _rays(count: int, inner: float, outer: float) -> Strokes:
    return [
        [(0.5 + inner * math.cos(a), 0.5 + inner * math.sin(a)),
         (0.5 + outer * math.cos(a), 0.5 + outer * math.sin(a))]
        for a in np.linspace(0, 2 * math.pi, count + 1)[:-1]
    ]  # fmt: skip


def _petals(count: int) -> Strokes:
    return [
        pictures.arc(0.5 + 0.16 * math.cos(a), 0.3 + 0.16 * math.sin(a), 0.08, 0.08, 0, 360, 10)
        for a in np.linspace(0, 2 * math.pi, count + 1)[:-1]
    ]


# Things people doodle, as pen strokes in a unit box (x right, y down); `pictures.pen_drawing`
# gives each drawing its own slant, size, place and wobble.
DOODLES: dict[str, Strokes] = {
    "smiley": _face(smile=True),
    "frowny": _face(smile=False),
    "house": [[(0.15, 0.45), (0.5, 0.1), (0.85, 0.45)],
              [(0.2, 0.45), (0.2, 0.95), (0.8, 0.95), (0.8, 0.45)],
              [(0.42, 0.95), (0.42, 0.7), (0.58, 0.7), (0.58, 0.95)]],
    "tree": [[(0.45, 0.95), (0.45, 0.6)], [(0.55, 0.95), (0.55, 0.6)],
             pictures.arc(0.5, 0.35, 0.35, 0.28, 0, 360, 20)],
    "sun": [pictures.arc(0.5, 0.5, 0.18, 0.18, 0, 360, 16), *_rays(8, 0.25, 0.45)],
    "spiral": [[(0.5 + t / 18 * math.cos(t), 0.5 + t / 18 * math.sin(t))
                for t in np.linspace(0.3, 5 * math.pi, 40)]],
    "flower": [pictures.arc(0.5, 0.3, 0.08, 0.08, 0, 360, 10), [(0.5, 0.4), (0.5, 0.98)],
               *_petals(5)],
    "stick_figure": [pictures.arc(0.5, 0.15, 0.1, 0.1, 0, 360, 12), [(0.5, 0.25), (0.5, 0.65)],
                     [(0.25, 0.4), (0.75, 0.4)], [(0.3, 0.95), (0.5, 0.65), (0.7, 0.95)]],
    "fish": [pictures.arc(0.45, 0.5, 0.3, 0.18, 0, 360, 20),
             [(0.75, 0.5), (0.95, 0.3), (0.95, 0.7), (0.75, 0.5)],
             pictures.arc(0.3, 0.45, 0.02, 0.02, 0, 360, 5)],
    "cloud": [pictures.arc(0.3, 0.55, 0.15, 0.15, 90, 270, 8)
              + pictures.arc(0.5, 0.42, 0.2, 0.18, 180, 360, 10)
              + pictures.arc(0.72, 0.55, 0.15, 0.15, 270, 450, 8) + [(0.3, 0.7)]],
    "lightning": [[(0.6, 0.0), (0.3, 0.5), (0.55, 0.5), (0.35, 1.0), (0.75, 0.4), (0.5, 0.4),
                   (0.7, 0.0)]],
    "envelope": [[(0.05, 0.25), (0.95, 0.25), (0.95, 0.8), (0.05, 0.8), (0.05, 0.25)],
                 [(0.05, 0.25), (0.5, 0.55), (0.95, 0.25)]],
    "cat": [pictures.arc(0.5, 0.55, 0.35, 0.32, -60, 240, 20),
            [(0.2, 0.35), (0.25, 0.05), (0.42, 0.25)], [(0.58, 0.25), (0.75, 0.05), (0.8, 0.35)],
            [(0.1, 0.6), (0.4, 0.62)], [(0.6, 0.62), (0.9, 0.6)]],
}  # fmt: skip


def _pen_letter(rng: np.random.Generator, _: np.ndarray) -> Image.Image:
    """A capital letter or a symbol drawn with a pen, as a hand on a mouse draws it."""
    return pictures.pen_drawing(PEN_LETTERS[str(rng.choice(list(PEN_LETTERS)))], rng)


# Letters and symbols as pen strokes in a unit box (x right, y down), none a digit's shape.
PEN_LETTERS: dict[str, Strokes] = {
    "A": [[(0.1, 1), (0.5, 0), (0.9, 1)], [(0.28, 0.55), (0.72, 0.55)]],
    "E": [[(0.8, 0), (0.2, 0), (0.2, 1), (0.8, 1)], [(0.2, 0.5), (0.65, 0.5)]],
    "F": [[(0.8, 0), (0.2, 0), (0.2, 1)], [(0.2, 0.5), (0.65, 0.5)]],
    "H": [[(0.2, 0), (0.2, 1)], [(0.8, 0), (0.8, 1)], [(0.2, 0.5), (0.8, 0.5)]],
    "K": [[(0.2, 0), (0.2, 1)], [(0.8, 0), (0.2, 0.55), (0.8, 1)]],
    "M": [[(0.1, 1), (0.15, 0), (0.5, 0.6), (0.85, 0), (0.9, 1)]],
    "N": [[(0.2, 1), (0.2, 0), (0.8, 1), (0.8, 0)]],
    "R": [[(0.2, 1), (0.2, 0), *pictures.arc(0.45, 0.25, 0.3, 0.25, -90, 90, 8), (0.2, 0.5),
           (0.8, 1)]],
    "W": [[(0.05, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (0.95, 0)]],
    "X": [[(0.15, 0), (0.85, 1)], [(0.85, 0), (0.15, 1)]],
    "Y": [[(0.15, 0), (0.5, 0.5), (0.85, 0)], [(0.5, 0.5), (0.5, 1)]],
    "plus": [[(0.5, 0.1), (0.5, 0.9)], [(0.1, 0.5), (0.9, 0.5)]],
    "hash": [[(0.35, 0), (0.3, 1)], [(0.7, 0), (0.65, 1)], [(0.05, 0.35), (0.95, 0.35)],
             [(0.05, 0.65), (0.95, 0.65)]],
    "asterisk": [[(0.5, 0), (0.5, 1)], [(0.1, 0.25), (0.9, 0.75)], [(0.9, 0.25), (0.1, 0.75)]],
    "equals": [[(0.1, 0.35), (0.9, 0.35)], [(0.1, 0.65), (0.9, 0.65)]],
    "pi": [[(0.05, 0.2), (0.95, 0.2)], [(0.3, 0.2), (0.3, 1)], [(0.7, 0.2), (0.75, 1)]],
    "sigma": [[(0.85, 0), (0.15, 0), (0.55, 0.5), (0.15, 1), (0.85, 1)]],
    "triangle": [[(0.5, 0), (0.95, 0.9), (0.05, 0.9), (0.5, 0)]],
}  # fmt: skip


def _noise(rng: np.random.Generator, _: np.ndarray) -> Image.Image:
    """Specks, blobs or a texture of little rectangles over a large part of a page."""
    canvas = pictures.blank_canvas(rng)
    draw = ImageDraw.Draw(canvas)
    kind = str(rng.choice(["specks", "blobs", "blocks"]))
    if kind == "specks":
        pixels = np.asarray(canvas.convert("L")).copy()
        pixels[rng.random(pixels.shape) < rng.uniform(0.02, 0.3)] = 0
        return Image.fromarray(pixels)
    for _ in range(int(rng.integers(6, 30))):
        x, y = rng.uniform(0, canvas.width), rng.uniform(0, canvas.height)
        w, h = rng.uniform(5, 40, size=2)
        box = (x, y, x + w, y + h)
        (draw.ellipse if kind == "blobs" else draw.rectangle)(box, fill="black")
    return canvas


def _digit_pair(rng: np.random.Generator, digits: np.ndarray) -> Image.Image:
    """Two MNIST digits side by side (a number) or drawn over each other."""
    first, second = digits[rng.integers(len(digits), size=2)]
    if rng.random() < 0.5:
        gap = int(rng.integers(-6, 3))
        pair = np.zeros((IMAGE_SIZE, 2 * IMAGE_SIZE + gap), np.uint8)
        pair[:, :IMAGE_SIZE] = first
        pair[:, IMAGE_SIZE + gap :] = np.maximum(pair[:, IMAGE_SIZE + gap :], second)
    else:
        dx, dy = rng.integers(-5, 6, size=2)
        pair = np.maximum(first, np.roll(second, (int(dy), int(dx)), axis=(0, 1)))
    return Image.fromarray(pair)


def _digit_cut(rng: np.random.Generator, digits: np.ndarray) -> Image.Image:
    """An MNIST digit cut into quarters that are put back in a shuffled order."""
    digit = digits[rng.integers(len(digits))]
    half = IMAGE_SIZE // 2
    quarters = [digit[r : r + half, c : c + half] for r in (0, half) for c in (0, half)]
    order = rng.permutation(4)
    while (order == np.arange(4)).all():
        order = rng.permutation(4)
    rows = [np.hstack([quarters[order[0]], quarters[order[1]]]),
            np.hstack([quarters[order[2]], quarters[order[3]]])]  # fmt: skip
    return Image.fromarray(np.vstack(rows))


FAMILIES: dict[str, Callable[[np.random.Generator, np.ndarray], Image.Image]] = {
    "latin_letters": _glyph("latin_letters"),
    "greek_cyrillic": _glyph("greek_cyrillic"),
    "math_symbols": _glyph("math_symbols"),
    "other_scripts": _glyph("other_scripts"),
    "pictographs": _glyph("pictographs"),
    "shapes": _shape,
    "pen_letters": _pen_letter,
    "doodles": _doodle,
    "scribbles": _scribble,
    "noise": _noise,
    "digit_pairs": _digit_pair,
    "digit_cuts": _digit_cut,
}


def generate(
    families: Iterable[str],
    per_family: int,
    seed: int,
    digits: np.ndarray,
    held_out: Iterable[str] = (),
    desc: str = "",
) -> NonDigitSet:
    """`per_family` pictures of each family, drawn with `seed` (digit-made families take their
    digits from `digits`) and preprocessed as the API does."""
    rng = np.random.default_rng(seed)
    images, names, rejected = [], [], {}
    families = list(families)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"Unknown non-digit families {unknown}; known: {sorted(FAMILIES)}")
    with tqdm(total=per_family * len(families), desc=desc, leave=False, disable=None) as bar:
        for family in families:
            for _ in range(per_family):
                try:
                    images.append(to_mnist(FAMILIES[family](rng, digits)))
                    names.append(family)
                except EmptyImageError:
                    rejected[family] = rejected.get(family, 0) + 1
                bar.update()
    stacked = np.stack(images) if images else np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return NonDigitSet(stacked, np.array(names, dtype=str), rejected, tuple(held_out))


def run(params: NonDigitParams) -> dict[str, object]:
    """Write the training set (training families only) and the validation and test sets (every
    family), each drawn with its own seed and from its own split's digits."""
    unknown = sorted(set(params.held_out) - set(FAMILIES))
    if unknown:
        raise ValueError(f"non_digits.held_out names unknown families {unknown}")
    seen = [family for family in FAMILIES if family not in params.held_out]
    sets = {
        "train": (seen, params.train_per_family, params.seeds.train),
        "val": (list(FAMILIES), params.eval_per_family, params.seeds.val),
        "test": (list(FAMILIES), params.eval_per_family, params.seeds.test),
    }
    summary: dict[str, object] = {"training_families": seen, "held_out": list(params.held_out)}
    for split, (families, per_family, seed) in sets.items():
        digits = load_split(params.data_dir, split)[0].numpy()
        generated = generate(
            families, per_family, seed, digits, params.held_out, desc=f"non-digits ({split})"
        )
        generated.save(params.out_dir / f"{split}.npz")
        summary[f"{split}_count"] = len(generated.images)
        summary[f"{split}_rejected"] = generated.rejected
        log.info("%s: %d non-digits of %d families", split, len(generated.images), len(families))
    write_json(params.metrics, summary)
    return summary
