"""Drift statistics: does a window of served predictions look like the reference window?

Black-box shift detection as in "Failing Loudly" (Rabanser, Günnemann and Lipton, NeurIPS 2019):
the classifier's own outputs (the predicted-class mix, the top-class confidence, the `uncertain`
share) find a shift in the inputs with few samples, and a few univariate statistics of the
28×28 inputs themselves (how much ink, the size and place of its bounding box) say what moved.
Each is a two-sample test; with several tests the family-wise error is held at `alpha` by
Bonferroni's correction, as the paper does, so an unshifted window raises a false alarm with
probability at most `alpha`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from scipy import stats

from mnist_core.imaging import INK_THRESHOLD
from mnist_core.labels import NUM_CLASSES

INK_LEVEL = round(INK_THRESHOLD * 255)  # a grey level above this is ink (as `to_mnist` counts)
# Empty classes would make PSI infinite: each share is floored at this (a common convention).
PSI_FLOOR = 1e-4
# The input statistics, each tested with a two-sample Kolmogorov-Smirnov test.
INPUT_STATISTICS = ("ink_share", "ink_box_height", "ink_box_width", "ink_box_row", "ink_box_col")
TESTS = ("class_mix", "confidence", "uncertain_share", *INPUT_STATISTICS)
# Each test's score, by the name it is stored and exported under (`mnist_drift_score{test}`).
SCORE_NAMES = {
    "class_mix": "class_mix_psi",
    "confidence": "confidence_ks",
    "uncertain_share": "uncertain_share_delta",
    **{name: f"{name}_ks" for name in INPUT_STATISTICS},
}


class Window(Protocol):
    """What the tests read of a window: the logged store's `PredictionWindow` is one."""

    pixels: np.ndarray  # (N, 28, 28) uint8, white ink on black, as the model saw it
    probabilities: np.ndarray  # (N, 10)
    uncertain: np.ndarray  # (N,) bool


W = TypeVar("W", bound=Window)


@dataclass(frozen=True)
class ScoredImages:
    """A window built here rather than read from the store (the validation split)."""

    pixels: np.ndarray
    probabilities: np.ndarray
    uncertain: np.ndarray


@dataclass(frozen=True)
class TestResult:
    name: str
    statistic: float  # the effect size shown on dashboards (PSI, KS distance, share delta)
    statistic_name: str  # `class_mix_psi`, `confidence_ks`, ...: the key in the stored scores
    p_value: float
    alarm: bool  # p below alpha / number of tests (Bonferroni)


@dataclass(frozen=True)
class DriftResult:
    tests: tuple[TestResult, ...]
    alpha: float
    window_size: int
    reference_size: int

    @property
    def drifted(self) -> bool:
        return any(test.alarm for test in self.tests)

    @property
    def scores(self) -> dict[str, float]:
        return {test.statistic_name: test.statistic for test in self.tests}

    @property
    def alarms(self) -> list[str]:
        """The scores' names of the tests that fired (the API's `mnist_drift_alarm{test}`)."""
        return [test.statistic_name for test in self.tests if test.alarm]


def input_statistics(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: the share of ink pixels, and its bounding box's height, width and centre (in
    pixels); NaN for an image without ink."""
    ink = np.asarray(pixels) > INK_LEVEL
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    has_ink = rows.any(axis=1)

    def extent(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = lines.argmax(axis=1).astype(float)
        last = (lines.shape[1] - 1 - lines[:, ::-1].argmax(axis=1)).astype(float)
        first[~has_ink] = last[~has_ink] = np.nan
        return last - first + 1, (first + last) / 2

    height, row = extent(rows)
    width, col = extent(cols)
    share = ink.mean(axis=(1, 2))
    return dict(zip(INPUT_STATISTICS, (share, height, width, row, col), strict=True))


def population_stability_index(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI = sum of (a - e) * ln(a / e) over the classes' shares (Siddiqi 2006: above 0.25, a
    major shift; from 0.1 to 0.25, a moderate one)."""
    e = np.maximum(expected / expected.sum(), PSI_FLOOR)
    a = np.maximum(actual / actual.sum(), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def class_mix_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(PSI, chi-square p-value) of two windows' predicted classes (a 2×10 contingency table)."""
    counts = np.stack([np.bincount(c, minlength=NUM_CLASSES) for c in (reference, window)])
    seen = counts.sum(axis=0) > 0  # a class neither window predicted adds nothing
    if seen.sum() < 2:
        return 0.0, 1.0
    p_value = stats.chi2_contingency(counts[:, seen], correction=False).pvalue
    return population_stability_index(counts[0], counts[1]), float(p_value)


def two_proportion_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(difference of the shares, two-sided p-value of the pooled two-proportion z-test)."""
    n1, n2 = len(reference), len(window)
    p1, p2 = float(np.mean(reference)), float(np.mean(window))
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:  # both windows all certain (or all uncertain): no difference to test
        return p2 - p1, 1.0
    return p2 - p1, float(2 * stats.norm.sf(abs(p2 - p1) / spread))


def ks_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(KS distance, p-value) of two samples, images without ink left out."""
    reference, window = reference[~np.isnan(reference)], window[~np.isnan(window)]
    if not len(reference) or not len(window):
        return 0.0, 1.0
    result = stats.ks_2samp(reference, window)
    return float(result.statistic), float(result.pvalue)


def compare(reference: Window, window: Window, alpha: float) -> DriftResult:
    """Run every test of `TESTS` on the two windows, Bonferroni-corrected to `alpha` overall."""
    if not len(reference.pixels) or not len(window.pixels):
        raise ValueError("Both windows need at least one prediction to compare.")
    before, after = input_statistics(reference.pixels), input_statistics(window.pixels)
    raw = {
        "class_mix": class_mix_test(
            reference.probabilities.argmax(1), window.probabilities.argmax(1)
        ),
        "confidence": ks_test(reference.probabilities.max(1), window.probabilities.max(1)),
        "uncertain_share": two_proportion_test(reference.uncertain, window.uncertain),
        **{name: ks_test(before[name], after[name]) for name in INPUT_STATISTICS},
    }
    threshold = alpha / len(raw)
    tests = []
    for name in TESTS:
        statistic, p_value = raw[name]
        tests.append(TestResult(name, statistic, SCORE_NAMES[name], p_value, p_value < threshold))
    return DriftResult(tuple(tests), alpha, len(window.pixels), len(reference.pixels))


def subset(window: W, rows: np.ndarray | slice) -> W:
    """The given rows of a window: every array field of the dataclass sliced alike."""
    fields = dataclasses.fields(window)  # type: ignore[arg-type]
    return type(window)(**{field.name: getattr(window, field.name)[rows] for field in fields})


def false_alarm_rate(
    reference: Window, unshifted: Window, window_size: int, windows: int, alpha: float, seed: int
) -> dict[str, float]:
    """How often the check fires on windows drawn (without replacement within a window) from
    data of the reference's own distribution: overall, and per test."""
    rng = np.random.default_rng(seed)
    fired = np.zeros((windows, len(TESTS)), dtype=bool)
    for index in range(windows):
        rows = rng.choice(len(unshifted.pixels), size=window_size, replace=False)
        result = compare(reference, subset(unshifted, rows), alpha)
        fired[index] = [test.alarm for test in result.tests]
    per_test = dict(zip(TESTS, fired.mean(axis=0).tolist(), strict=True))
    return {"any": float(fired.any(axis=1).mean()), **per_test}
