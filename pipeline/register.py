"""Stage `register`: register the evaluated model and let a quality gate decide on promotion.

The `production` alias moves only when the new version clears the thresholds in `params.yaml`
and is not worse on the test set than the version serving now. The decision and its reason go
to the MLflow run, to the model version's tags and to a DVC metrics file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_core.imaging import IMAGE_SIZE
from mnist_core.settings import MlflowSettings
from pipeline.cli import parse_stage_args
from pipeline.io import read_json, write_json
from pipeline.params import RegisterParams
from pipeline.registry import promote, version_with_alias
from pipeline.tracking import configure_mlflow, log_onnx_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    metrics: Mapping[str, object], incumbent_accuracy: float | None, params: RegisterParams
) -> Decision:
    """The quality gate: thresholds first, then no regression against the served version."""
    test_accuracy = float(metrics["test_accuracy"])  # type: ignore[arg-type]
    if test_accuracy < params.min_test_accuracy:
        return Decision(False, f"test accuracy {test_accuracy:.4f} < {params.min_test_accuracy}")
    seed_accuracy = float(metrics["seed_accuracy"])  # type: ignore[arg-type]
    if seed_accuracy < params.min_seed_accuracy:
        return Decision(
            False, f"seed-image accuracy {seed_accuracy:.2f} < {params.min_seed_accuracy}"
        )
    real = float(metrics.get("real_pictures_accuracy", 0.0))  # type: ignore[arg-type]
    if real < params.min_real_pictures_accuracy:
        return Decision(
            False,
            f"real-pictures accuracy {real:.3f} < {params.min_real_pictures_accuracy}",
        )
    held_out = float(metrics.get("held_out_non_digits_flagged", 0.0))  # type: ignore[arg-type]
    if held_out < params.min_held_out_non_digits_flagged:
        return Decision(
            False,
            f"non-digits of families never trained on flagged {held_out:.3f} < "
            f"{params.min_held_out_non_digits_flagged}",
        )
    if incumbent_accuracy is None:
        return Decision(True, f"test accuracy {test_accuracy:.4f}; nothing is in production yet")
    if test_accuracy < incumbent_accuracy:
        return Decision(
            False,
            f"test accuracy {test_accuracy:.4f} is worse than production's "
            f"{incumbent_accuracy:.4f}",
        )
    return Decision(
        True, f"test accuracy {test_accuracy:.4f} ≥ production's {incumbent_accuracy:.4f}"
    )


def describe(metrics: Mapping[str, object], data_version: str, decision: Decision) -> str:
    """The model version's description, as the registry UI shows it (Markdown)."""
    verdict = "promoted to production" if decision.promote else "not promoted"
    lines = [
        f"**Gate:** {verdict}: {decision.reason}.",
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
        f"| `uncertain` below, temperature | {metrics.get('uncertain_below', 0):.3f}, "
        f"{metrics.get('temperature', 1):.3f} |",
        "",
        f"Data version (DVC): `{data_version}`.",
    ]
    return "\n".join(lines)


def _registered_version(
    client: MlflowClient, name: str, run_id: str, model_uri: str
) -> ModelVersion:
    """The version registered from this run, registering it first if need be (re-runs are safe)."""
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        return version
    return mlflow.register_model(model_uri, name, tags={"run_id": run_id})


def _run_in_this_store(
    client: MlflowClient, run: dict[str, str], metrics: dict[str, object], params: RegisterParams
) -> tuple[str, str]:
    """The training run and model URI to register. When this tracking store does not know the
    run (a new server, a deleted mlflow.db), the DVC-tracked ONNX model is logged again in a new
    run, with the evaluation's metrics, so that the registry can always be rebuilt."""
    try:
        client.get_run(run["run_id"])
        return run["run_id"], run["model_uri"]
    except MlflowException:
        pass
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    for earlier in client.search_runs(experiments, f"tags.relogged_from_run = '{run['run_id']}'"):
        return earlier.info.run_id, f"runs:/{earlier.info.run_id}/model"  # logged again before
    log.warning(
        "Run %s is not in this tracking store: logging %s again", run["run_id"], params.onnx_path
    )
    with mlflow.start_run(run_name="relogged-" + run["run_id"][:8]) as relogged:
        mlflow.set_tag("relogged_from_run", run["run_id"])
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        example = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        model_uri = log_onnx_model(params.onnx_path, example)
    return relogged.info.run_id, model_uri


def register(params: RegisterParams, settings: MlflowSettings) -> Decision:
    run = read_json(params.run_info)
    metrics = read_json(params.metrics)
    configure_mlflow(settings)
    client = MlflowClient()
    run_id, model_uri = _run_in_this_store(client, run, metrics, params)
    version = _registered_version(client, settings.model_name, run_id, model_uri)
    client.set_model_version_tag(
        settings.model_name, version.version, "test_accuracy", f"{metrics['test_accuracy']:.4f}"
    )
    incumbent = version_with_alias(client, settings.model_name, settings.model_alias)
    if incumbent is not None and str(incumbent.version) == str(version.version):
        decision = Decision(True, f"version {version.version} already holds the alias")
    else:
        incumbent_accuracy = None
        if incumbent is not None:
            incumbent_run = client.get_run(incumbent.run_id)
            incumbent_accuracy = incumbent_run.data.metrics.get("test_accuracy")
        decision = decide(metrics, incumbent_accuracy, params)
    if decision.promote:
        promote(client, settings, version.version)
    verdict = "promoted" if decision.promote else "not promoted"
    log.info("%s version %s %s: %s", settings.model_name, version.version, verdict, decision.reason)

    client.set_model_version_tag(settings.model_name, version.version, "gate", verdict)
    client.set_model_version_tag(
        settings.model_name, version.version, "gate_reason", decision.reason
    )
    for key in ("temperature", "uncertain_below"):
        if key in metrics:
            client.set_model_version_tag(
                settings.model_name, version.version, key, f"{metrics[key]:.4g}"
            )
    data_version = client.get_run(run_id).data.tags.get("data_version", "unknown")
    client.update_model_version(
        settings.model_name, version.version, describe(metrics, data_version, decision)
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags({"registry.decision": verdict, "registry.reason": decision.reason})
        mlflow.set_tag("registry.version", version.version)
    write_json(
        params.decision,
        {
            "model_name": settings.model_name,
            "version": int(version.version),
            "promoted": decision.promote,
            "reason": decision.reason,
        },
    )
    return decision


def main(argv: list[str] | None = None) -> None:
    register(parse_stage_args(__doc__ or "", argv).registration, MlflowSettings())


if __name__ == "__main__":
    main()
