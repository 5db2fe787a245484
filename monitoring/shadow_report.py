"""Production against the challenger on what the API logged: for every pair of versions that
met in the shadow (`serving.shadow`), how often they agreed, how often each said `uncertain`,
where they disagreed, and each one's accuracy on the reviewed (accepted) feedback.

`mnist-registry compare` prints it, so that a person promotes the challenger on evidence from
real use. Feedback is scored as the evaluate stage scores the held-out feedback: a digit is right
when predicted as labelled, `not_a_digit` when the answer was flagged `uncertain`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import and_, func, select

from mnist_core.labels import NOT_A_DIGIT
from monitoring.store import Store
from monitoring.tables import feedback, predictions, shadow_answers

TOP_DISAGREEMENTS = 5


@dataclass(frozen=True)
class Side:
    """One version's figures on the compared traffic."""

    version: str
    uncertain: int  # answers flagged `uncertain`
    right: int  # reviewed feedback it got right


@dataclass(frozen=True)
class Comparison:
    """A production version against a challenger version, on the predictions both answered."""

    production: Side
    challenger: Side
    compared: int  # predictions with both answers
    agreed: int
    reviewed: int  # of those, predictions with accepted feedback
    disagreements: list[tuple[int, int, int]] = field(default_factory=list)  # (prod, chal, n)

    def share(self, count: int, of: int | None = None) -> float | None:
        total = self.compared if of is None else of
        return count / total if total else None

    def as_dict(self) -> dict:
        def side(one: Side) -> dict:
            return {
                "version": one.version,
                "uncertain_share": self.share(one.uncertain),
                "feedback_accuracy": self.share(one.right, self.reviewed),
                "feedback_right": one.right,
            }

        return {
            "production": side(self.production),
            "challenger": side(self.challenger),
            "compared": self.compared,
            "agreement": self.share(self.agreed),
            "reviewed_feedback": self.reviewed,
            "top_disagreements": [
                {"production": p, "challenger": c, "count": n} for p, c, n in self.disagreements
            ],
        }


def _right(label: str | None, digit: int, uncertain: bool) -> bool:
    return uncertain if label == NOT_A_DIGIT else label == str(digit)


def compare(store: Store, challenger_version: str | None = None) -> list[Comparison]:
    """Every (production, challenger) pair of versions in the shadow log, most compared first;
    only those of `challenger_version` when it is given. Counted in the database (one row per
    combination of answers), so a log of millions of rows is read in one short query."""
    accepted = and_(feedback.c.prediction_id == predictions.c.id, feedback.c.status == "accepted")
    keys = (
        predictions.c.model_version,
        shadow_answers.c.challenger_version,
        predictions.c.digit,
        predictions.c.uncertain,
        shadow_answers.c.digit.label("challenger_digit"),
        shadow_answers.c.uncertain.label("challenger_uncertain"),
        feedback.c.label,
    )
    query = (
        select(*keys, func.count())
        .select_from(shadow_answers)
        .join(predictions, predictions.c.id == shadow_answers.c.prediction_id)
        .outerjoin(feedback, accepted)
        .group_by(*keys)
    )
    if challenger_version is not None:
        query = query.where(shadow_answers.c.challenger_version == challenger_version)
    with store.engine.connect() as connection:
        groups = connection.execute(query).all()
    tallies: dict[tuple[str, str], Counter] = {}
    pairs: dict[tuple[str, str], Counter] = {}
    for production, challenger, digit, uncertain, their_digit, their_uncertain, label, n in groups:
        tally = tallies.setdefault((production, challenger), Counter())
        tally["compared"] += n
        tally["agreed"] += n * (digit == their_digit)
        tally["production_uncertain"] += n * bool(uncertain)
        tally["challenger_uncertain"] += n * bool(their_uncertain)
        if label is not None:
            tally["reviewed"] += n
            tally["production_right"] += n * _right(label, digit, uncertain)
            tally["challenger_right"] += n * _right(label, their_digit, their_uncertain)
        if digit != their_digit:
            pairs.setdefault((production, challenger), Counter())[(digit, their_digit)] += n
    comparisons = [
        Comparison(
            production=Side(production, t["production_uncertain"], t["production_right"]),
            challenger=Side(challenger, t["challenger_uncertain"], t["challenger_right"]),
            compared=t["compared"],
            agreed=t["agreed"],
            reviewed=t["reviewed"],
            disagreements=[
                (p, c, n)
                for (p, c), n in pairs.get((production, challenger), Counter()).most_common(
                    TOP_DISAGREEMENTS
                )
            ],
        )
        for (production, challenger), t in tallies.items()
    ]
    return sorted(comparisons, key=lambda one: -one.compared)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def describe(comparison: Comparison) -> list[str]:
    """A comparison as lines of text."""
    production, challenger = comparison.production, comparison.challenger
    lines = [
        f"production version {production.version} against challenger version {challenger.version}",
        f"  logged traffic: {comparison.compared:,} answers compared",
        f"    agreement             {_percent(comparison.share(comparison.agreed))}",
        f"    uncertain             production {_percent(comparison.share(production.uncertain))}"
        f", challenger {_percent(comparison.share(challenger.uncertain))}",
    ]
    if comparison.disagreements:
        top = ", ".join(f"{p} → {c} ({n:,})" for p, c, n in comparison.disagreements)
        lines.append(f"    disagreements         production → challenger: {top}")
    reviewed = comparison.reviewed
    if reviewed:
        lines += [
            f"  reviewed feedback: {reviewed:,} accepted answers from users",
            f"    accuracy              production "
            f"{_percent(comparison.share(production.right, reviewed))} "
            f"({production.right}/{reviewed}), challenger "
            f"{_percent(comparison.share(challenger.right, reviewed))} "
            f"({challenger.right}/{reviewed})",
        ]
    else:
        lines.append("  reviewed feedback: none yet on these answers (mnist-feedback accept …)")
    return lines
