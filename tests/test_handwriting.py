"""The handwriting kinds the evaluate stage reports apart: each one drawn as it claims, every
digit of every kind, through the API's own preprocessing, the same for the same seed."""

from __future__ import annotations

import numpy as np

from pipeline.datagen.digit_pictures import HANDWRITING_KINDS, handwriting, preprocess


def by_kind(seed: int, per_digit: int = 2) -> dict[str, np.ndarray]:
    drawn = preprocess(handwriting(seed, per_digit))
    assert drawn.rejected == []  # nothing came out empty
    kinds = np.array(drawn.kinds)
    return {kind: drawn.images[kinds == kind] for kind in HANDWRITING_KINDS}


def test_every_digit_of_every_kind_reaches_the_model() -> None:
    pictures = list(handwriting(seed=3, per_digit=2))
    assert [p.kind for p in pictures[::20]] == list(HANDWRITING_KINDS)
    for kind in HANDWRITING_KINDS:
        labels = sorted(p.label for p in pictures if p.kind == kind)
        assert labels == sorted(list(range(10)) * 2)


def test_the_kinds_are_what_they_say() -> None:
    images = by_kind(seed=3)
    ink = {kind: (batch > 128).mean() for kind, batch in images.items()}
    # A thick pen leaves more than twice the ink of a thin one at 28×28.
    assert ink["thick_pen"] > 2 * ink["thin_pen"]
    # A low-resolution scan, upscaled, is blurred: more grey levels between paper and ink.
    grey = {kind: ((batch > 40) & (batch < 215)).mean() for kind, batch in images.items()}
    assert grey["low_res_scan"] > 1.5 * grey["thick_pen"]
    scans = [p.image for p in handwriting(seed=3, per_digit=1) if p.kind == "low_res_scan"]
    assert all(image.mode == "RGB" and image.width >= 160 for image in scans)
    sheets = [p.image for p in handwriting(seed=3, per_digit=1) if p.kind == "off_centre"]
    assert all(image.width >= 700 for image in sheets)


def test_the_same_seed_draws_the_same_pictures() -> None:
    first, again, other = by_kind(1), by_kind(1), by_kind(2)
    assert all(np.array_equal(first[k], again[k]) for k in HANDWRITING_KINDS)
    assert not np.array_equal(first["slanted"], other["slanted"])
