"""How well the model tells non-digits from digits, measured as the out-of-distribution
literature does (Hendrycks & Gimpel 2017; Hendrycks et al. 2019).

The score is the top-class probability, which is what the API compares with the `uncertain`
threshold. Per non-digit family, and for the families training saw and never saw: the share
flagged at the model's threshold, AUROC of digits against them, and the share still accepted when
95 % or 99 % of the digits are (lower is better).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from pipeline.data.datasets import NonDigitSet

DIGITS_ACCEPTED = (0.95, 0.99)


def _scores(digit_confidence: np.ndarray, other_confidence: np.ndarray, threshold: float,
            rejected: int = 0) -> dict[str, float]:  # fmt: skip
    """Figures for one group of non-digits; `rejected` more were refused as empty (flagged)."""
    total = len(other_confidence) + rejected
    if total == 0:
        return {}
    labels = np.r_[np.ones(len(digit_confidence)), np.zeros(len(other_confidence))]
    figures = {
        "count": float(total),
        "flagged": float(((other_confidence < threshold).sum() + rejected) / total),
        "auroc": float(roc_auc_score(labels, np.r_[digit_confidence, other_confidence]))
        if len(other_confidence)
        else 1.0,
    }
    for accepted in DIGITS_ACCEPTED:
        # The confidence above which this share of digits lies, and the non-digits above it.
        cut = np.quantile(digit_confidence, 1 - accepted)
        figures[f"accepted_at_{round(accepted * 100)}"] = float(
            (other_confidence >= cut).sum() / total
        )
    return figures


def rejection_metrics(
    digit_confidence: np.ndarray,
    non_digits: NonDigitSet,
    non_digit_confidence: np.ndarray,
    threshold: float,
) -> dict[str, object]:
    """Figures per family and for the seen and held-out groups, against the top-class
    probabilities of digits of the same split."""
    families = non_digits.families
    held = np.isin(families, list(non_digits.held_out))
    rejected = non_digits.rejected

    def group(mask: np.ndarray, names: set[str]) -> dict[str, float]:
        refused = sum(count for name, count in rejected.items() if name in names)
        return _scores(digit_confidence, non_digit_confidence[mask], threshold, refused)

    all_names = set(families.tolist()) | set(rejected)
    held_names = {name for name in all_names if name in non_digits.held_out}
    return {
        "all": group(np.ones(len(families), bool), all_names),
        "seen": group(~held, all_names - held_names),
        "held_out": group(held, held_names),
        "by_family": {name: group(families == name, {name}) for name in sorted(all_names)},
    }
