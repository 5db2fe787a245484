"""Register the evaluated model as a version with its lineage and the gate's verdict, and let the
promotion policy (`pipeline.registry.policy`) decide which alias it gets."""

from __future__ import annotations

import logging

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from mnist_core.settings import MlflowSettings
from pipeline.io import read_json, write_json
from pipeline.params import RegisterParams
from pipeline.registry.aliases import promote, version_with_alias
from pipeline.registry.demotion import demotion_of
from pipeline.registry.history import move_alias, refresh_description
from pipeline.registry.lineage import current_lineage
from pipeline.registry.policy import (
    POLICY,
    VERDICTS,
    Decision,
    check_metrics_match,
    decide,
    describe,
    gate_failures,
)
from pipeline.registry.tracking import configure_mlflow, run_in_this_store

log = logging.getLogger(__name__)
# Who the alias history names for the moves the policy makes.
STAGE = "register stage"


def _registered_version(
    client: MlflowClient, name: str, run_id: str, model_uri: str
) -> ModelVersion:
    """The version registered from this run, registering it first if need be (re-runs are safe)."""
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        return version
    return mlflow.register_model(model_uri, name, tags={"run_id": run_id})


def _incumbent_figure(client: MlflowClient, incumbent: ModelVersion, metric: str) -> float | None:
    """Production's figure for `metric`: its version's tag, else its run's metric."""
    if metric in incumbent.tags:
        return float(incumbent.tags[metric])
    return client.get_run(incumbent.run_id).data.metrics.get(metric)


def _tag_version(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def register(params: RegisterParams, settings: MlflowSettings) -> Decision:
    run = read_json(params.run_info)
    metrics = read_json(params.metrics)
    digest = check_metrics_match(metrics, params)
    lineage = current_lineage(str(metrics.get("data_version", "unknown")), digest)
    configure_mlflow(settings)
    client = MlflowClient()
    name = settings.model_name
    run_id, model_uri = run_in_this_store(client, run, params.onnx_path, metrics)
    version = _registered_version(client, name, run_id, model_uri)
    # The lineage first: every alias move records the commit of the version it moves to.
    _tag_version(client, name, version.version, lineage.tags())
    incumbent = version_with_alias(client, name, settings.model_alias)
    demotion = demotion_of(version)
    production_feedback = None
    if incumbent is not None and str(incumbent.version) == str(version.version):
        decision = Decision("promote", f"version {version.version} already holds the alias")
    elif incumbent is not None:
        accuracy = _incumbent_figure(client, incumbent, "test_accuracy")
        production_feedback = _incumbent_figure(client, incumbent, "feedback_accuracy")
        decision = decide(
            metrics,
            lineage,
            accuracy,
            params,
            has_incumbent=True,
            incumbent_feedback_accuracy=production_feedback,
            demotion=demotion,
        )
    else:
        decision = decide(metrics, lineage, None, params, has_incumbent=False, demotion=demotion)
    if decision.promote:
        promote(client, settings, version.version, decision.reason, by=STAGE, automatic=True)
    elif decision.action == "challenger":
        challenger = client.get_model_version(name, version.version)
        move_alias(client, name, settings.challenger_alias, challenger, STAGE, decision.reason)
    log.log(
        logging.WARNING if demotion else logging.INFO,
        "%s version %s: %s (%s)", name, version.version, decision.action, decision.reason,
    )  # fmt: skip

    failures = gate_failures(metrics, params, production_feedback)
    _tag_version(
        client,
        name,
        version.version,
        {
            "test_accuracy": f"{metrics['test_accuracy']:.4f}",
            "gate": "failed" if failures else "passed",
            "gate_reason": "; ".join(failures) or "every threshold met",
            "policy": decision.action,
            "policy_reason": decision.reason,
            **{k: f"{metrics[k]:.4g}" for k in ("temperature", "uncertain_below") if k in metrics},
            "feedback_count": str(metrics.get("feedback_count", 0)),
            **(
                {"feedback_accuracy": f"{metrics['feedback_accuracy']:.4f}"}
                if "feedback_accuracy" in metrics
                else {}
            ),
        },
    )
    client.update_model_version(name, version.version, describe(metrics, lineage, decision))
    refresh_description(client, name, POLICY)
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags(
            {
                "registry.decision": VERDICTS[decision.action],
                "registry.reason": decision.reason,
                "registry.version": version.version,
            }
        )
    write_json(
        params.decision,
        {
            "model_name": name,
            "version": int(version.version),
            "promoted": decision.promote,
            "action": decision.action,
            "reason": decision.reason,
            "demoted": demotion is not None,
        },
    )
    return decision
