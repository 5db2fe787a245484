"""The promotion policy: the quality gate, and whether a registered version moves `production`.

Every evaluated model becomes a version, tagged with where it came from (git commit and whether
the tree was dirty, branch, DVC experiment, data version, ONNX sha256) and with the gate's
verdict. `production` moves only
- never to a version a person moved `production` away from (`pipeline.registry.demotion`);
- to the first servable version of an empty registry (so a fresh `make run` serves), or
- from a `dvc repro` of a clean tree on the configured branch, with `register.promote: auto`,
  when the gate passes and the version beats production's test accuracy (a tie keeps it).
A `dvc exp run`, a dirty tree or another branch never moves it: a version that passes the gate
gets the `challenger` alias instead, for `mnist-registry promote` to promote by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pipeline.io import sha256_of
from pipeline.params import RegisterParams
from pipeline.registry.demotion import Demotion
from pipeline.registry.lineage import Lineage

log = logging.getLogger(__name__)

# The quality gate: each metric of the evaluate stage must reach the minimum that the named
# `register` parameter sets.
GATE = {
    "test_accuracy": "min_test_accuracy",
    "seed_accuracy": "min_seed_accuracy",
    "real_pictures_accuracy": "min_real_pictures_accuracy",
    "held_out_non_digits_flagged": "min_held_out_non_digits_flagged",
}
# Shown on the registered model in the MLflow UI.
POLICY = (
    "Every evaluated model is registered with its lineage (tags `git_*`, `dvc_experiment`, "
    "`data_version`, `onnx_sha256`) and the quality gate's verdict (`gate`, `gate_reason`). "
    "`production` never moves on its own to a version a person moved it away from (tags "
    "`demoted_by`, `_at`, `_because`; `mnist-registry promote N` clears them). "
    "It moves only to the first servable version of an empty registry, or from a "
    "`dvc repro` of a clean tree on the configured branch (`register.promote: auto`) that passes "
    "the gate and beats production's test accuracy (a tie keeps production). Experiments, dirty "
    "trees and other branches get `challenger` at most. By hand: `mnist-registry promote N "
    "--reason …`, recorded on the version (`promoted_by`, `_at`, `_because`, `_from`)."
)

Action = Literal["promote", "challenger", "none"]
VERDICTS: dict[Action, str] = {
    "promote": "promoted",
    "challenger": "not promoted (challenger)",
    "none": "not promoted",
}


class MetricsMismatch(RuntimeError):
    """The metrics file was computed on another model file than the one to register."""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str

    @property
    def promote(self) -> bool:
        return self.action == "promote"


def feedback_regression(
    metrics: Mapping[str, object], params: RegisterParams, production: float | None
) -> str | None:
    """Why the version is worse than production on the held-out user feedback, or None: only
    with at least `min_feedback_rows` rows and production's figure known."""
    count = metrics.get("feedback_count", 0)
    accuracy = metrics.get("feedback_accuracy")
    if production is None or not isinstance(accuracy, int | float):
        return None
    if not isinstance(count, int) or count < params.min_feedback_rows or accuracy >= production:
        return None
    return (
        f"held-out feedback accuracy {accuracy:.4f} < production's {production:.4f} ({count} rows)"
    )


def gate_failures(
    metrics: Mapping[str, object],
    params: RegisterParams,
    production_feedback_accuracy: float | None = None,
) -> list[str]:
    """The gate's checks that fail, as sentences; empty when it passes."""
    failures = []
    if regression := feedback_regression(metrics, params, production_feedback_accuracy):
        failures.append(regression)
    for metric, parameter in GATE.items():
        minimum = float(getattr(params, parameter))
        value = metrics.get(metric)
        if not isinstance(value, int | float):
            failures.append(f"{metric} is missing from the evaluation")
        elif value < minimum:
            failures.append(f"{metric} {value:.4f} < {minimum}")
    return failures


def decide(
    metrics: Mapping[str, object],
    lineage: Lineage,
    incumbent_accuracy: float | None,
    params: RegisterParams,
    has_incumbent: bool,
    incumbent_feedback_accuracy: float | None = None,
    demotion: Demotion | None = None,
) -> Decision:
    """The promotion policy: a person's `demotion` of this version first, then the gate
    (held-out feedback against production's `incumbent_feedback_accuracy` included), then where
    the model came from, then the comparison with production (`incumbent_accuracy`; None when
    unknown)."""
    if demotion is not None:
        return Decision("none", demotion.sentence())
    if failures := gate_failures(metrics, params, incumbent_feedback_accuracy):
        return Decision("none", "; ".join(failures))
    accuracy = float(metrics["test_accuracy"])  # type: ignore[arg-type]
    if not has_incumbent:
        return Decision("promote", f"test accuracy {accuracy:.4f}; nothing is in production yet")
    if lineage.experiment:
        return Decision(
            "challenger", f"experiment {lineage.experiment}: experiments never move production"
        )
    if lineage.dirty:
        return Decision("challenger", "the working tree has uncommitted changes")
    if lineage.branch != params.branch:
        return Decision(
            "challenger", f"branch {lineage.branch or '(detached)'} is not {params.branch}"
        )
    if params.promote == "manual":
        return Decision("challenger", "register.promote is manual: promote by hand")
    if incumbent_accuracy is None:
        return Decision("challenger", "production's test accuracy is unknown: promote by hand")
    if accuracy <= incumbent_accuracy:
        return Decision(
            "none",
            f"test accuracy {accuracy:.4f} does not beat production's {incumbent_accuracy:.4f}",
        )
    return Decision(
        "promote", f"test accuracy {accuracy:.4f} > production's {incumbent_accuracy:.4f}"
    )


def describe(metrics: Mapping[str, object], lineage: Lineage, decision: Decision) -> str:
    """The model version's description, as the registry UI shows it (Markdown)."""
    verdict = VERDICTS[decision.action] + (" to production" if decision.promote else "")
    dirty = " (with uncommitted changes)" if lineage.dirty else ""
    lines = [
        f"**Policy:** {verdict}: {decision.reason}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy | {metrics['test_accuracy']:.4f} ({metrics['test_errors']} errors) |",
        f"| test ECE, calibrated (uncalibrated) | {metrics.get('test_ece', float('nan')):.4f} "
        f"({metrics.get('test_ece_uncalibrated', float('nan')):.4f}) |",
        f"| real-looking pictures accuracy | {metrics.get('real_pictures_accuracy', 0):.3f} |",
        f"| non-digits flagged `uncertain`: all (families never trained on) | "
        f"{metrics.get('non_digits_flagged', 0):.3f} "
        f"({metrics.get('held_out_non_digits_flagged', 0):.3f}) |",
        f"| test digits flagged `uncertain` | {metrics.get('test_flagged', 0):.4f} |",
        f"| held-out user feedback right (rows) | {feedback_figure(metrics)} |",
        f"| `uncertain` below, temperature | {metrics.get('uncertain_below', 0):.3f}, "
        f"{metrics.get('temperature', 1):.3f} |",
        "",
        f"Commit `{lineage.commit}`{dirty} on `{lineage.branch or '(detached)'}`"
        + (f", experiment `{lineage.experiment}`" if lineage.experiment else "")
        + f"; data version (DVC) `{lineage.data_version}`.",
    ]
    return "\n".join(lines)


def feedback_figure(metrics: Mapping[str, object]) -> str:
    if "feedback_accuracy" not in metrics:
        return "no feedback (0)"
    return f"{metrics['feedback_accuracy']:.3f} ({metrics['feedback_count']})"


def check_metrics_match(metrics: Mapping[str, object], params: RegisterParams) -> str:
    """The ONNX file's sha256, when the metrics were computed on this very file."""
    digest = sha256_of(params.onnx_path)
    scored = metrics.get("onnx_sha256")
    if scored != digest:
        raise MetricsMismatch(
            f"{params.metrics} scored the model with sha256 {scored or '(not recorded)'}, but "
            f"{params.onnx_path} has sha256 {digest}: run the evaluate stage on this model "
            "first (`dvc repro`)."
        )
    return digest
