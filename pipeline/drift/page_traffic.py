"""The drift check on ordinary page traffic: how often it fires on digits drawn with the page's
stroke renderer (`pipeline.datagen.digit_pictures.mouse_drawing`, through the API's own
preprocessing), against each kind of reference, and whether the shifts still fire.

    python -m pipeline.drift.page_traffic [--params params.yaml] [-S drift.window_size=500]

References: `validation` (the MNIST validation split, scored by `drift.onnx_path`) and `traffic`
(another window of the same drawn traffic, as the check's `traffic` reference sees it). Shifts,
each applied to a window of drawn digits: a thick pen (3×3 dilation), dark ink on a light page
sent as is, and a window of one digit (sevens).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from mnist_core.classifier import DigitClassifier
from mnist_core.imaging import EmptyImageError, to_mnist
from pipeline.cli import parse_stage_args
from pipeline.datagen.digit_pictures import mouse_drawing
from pipeline.drift.check import score_split, scored
from pipeline.drift.statistics import ScoredImages, compare
from pipeline.params import DriftParams

DRAWN = 6000  # drawn digits to take windows from
TRIALS = 200  # windows per figure

Shift = Callable[[np.ndarray, np.ndarray], np.ndarray]
SHIFTS: dict[str, Shift] = {
    "thick strokes": lambda pixels, labels: ndimage.grey_dilation(pixels, size=(1, 3, 3)),
    "dark on light": lambda pixels, labels: 255 - pixels,
    "only sevens": lambda pixels, labels: pixels[labels == 7],
}


def drawn_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random digits drawn as on the page's canvas, as the API's preprocessing gives
    them (a drawing it would refuse as empty is left out, as the API answers it with 422)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for digit in rng.integers(0, 10, size=count):
        try:
            images.append(to_mnist(mouse_drawing(int(digit), rng)))
        except EmptyImageError:
            continue
        labels.append(int(digit))
    return np.stack(images), np.array(labels)


def firing_rates(
    classifier: DigitClassifier,
    validation: ScoredImages,
    drawn: tuple[np.ndarray, np.ndarray],
    window: int,
    trials: int,
    alpha: float,
    seed: int,
) -> dict[str, dict[str, float]]:
    """For each reference, the share of `trials` windows on which the check fires: unshifted
    (false alarms) and under each shift (detection). A `traffic` reference and its window are
    disjoint windows of the drawn digits."""
    pixels, labels = drawn
    rng = np.random.default_rng(seed)
    fired: dict[str, dict[str, list[bool]]] = {"validation": {}, "traffic": {}}
    for _ in range(trials):
        rows = rng.permutation(len(pixels))
        traffic = scored(classifier, pixels[rows[:window]])
        rest = rows[window:]
        windows = {"unshifted": pixels[rest[:window]]}
        for name, shift in SHIFTS.items():
            windows[name] = shift(pixels[rest], labels[rest])[:window]
        for name, shown in windows.items():
            window_scored = scored(classifier, shown)
            for reference_name, reference in (("validation", validation), ("traffic", traffic)):
                drifted = compare(reference, window_scored, alpha).drifted
                fired[reference_name].setdefault(name, []).append(drifted)
    return {
        reference: {name: float(np.mean(flags)) for name, flags in by_window.items()}
        for reference, by_window in fired.items()
    }


def measure(params: DriftParams, drawn_count: int = DRAWN, trials: int = TRIALS) -> dict:
    classifier = DigitClassifier(params.onnx_path)
    validation = score_split(params, classifier, "val")
    drawn = drawn_digits(drawn_count, params.seed)
    rates = firing_rates(
        classifier, validation, drawn, params.window_size, trials, params.alpha, params.seed
    )
    return {"window_size": params.window_size, "trials": trials, "drawn": len(drawn[0]), **rates}


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(measure(parse_stage_args(__doc__ or "", argv).drift), indent=2))


if __name__ == "__main__":
    main()
