"""The registry's aliases: find the version holding one, promote a version, roll back.

Promotion moves the `production` alias (MLflow 3 replaced stages with aliases) and leaves the
version it replaces under the `previous` alias, which `rollback` returns to. Who promoted a
version, when, why and from which version is recorded on it (tags `promoted_*`). A person's move
marks the version it leaves demoted (`pipeline.registry.demotion`), so that the register stage
does not undo it. Every move of an alias is recorded in the registry (`pipeline.registry.history`).
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_core.settings import MlflowSettings
from pipeline.registry.demotion import clear_demotion, demotion_of, mark_demoted
from pipeline.registry.history import AliasEvent, move_alias, read_history, refresh_description


class RegistryError(RuntimeError):
    """A registry request that cannot be carried out, with what to do instead."""


# The one registry error that means "not there": anything else is a failure to report.
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def version_with_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`; None only when the registry says the model or the alias does
    not exist. Any other error (a server down, refused access) raises a `RegistryError`."""
    # The registered model's aliases, rather than `get_model_version_by_alias`: a missing alias
    # comes back from that as INVALID_PARAMETER_VALUE, told apart from real errors only by text.
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code == NOT_FOUND:
            return None
        raise RegistryError(
            f"The registry could not say which version of {name} holds '{alias}' "
            f"({error.error_code}); nothing was changed. Check MLFLOW_TRACKING_URI and retry."
        ) from error
    version = aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def record_promotion(
    client: MlflowClient, name: str, version: str, by: str, reason: str, previous: str | None
) -> None:
    """Who moved the serving alias to `version`, when, why and from which version."""
    tags = {
        "promoted_by": by,
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "promoted_because": reason,
        "promoted_from": previous or "none",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def _not_registered(name: str) -> RegistryError:
    return RegistryError(f"No model named {name} is registered yet: run `dvc repro`.")


def alias_history(client: MlflowClient, name: str) -> list[AliasEvent]:
    """Every recorded move of the model's aliases, newest first."""
    try:
        return read_history(client, name)
    except MlflowException as error:
        raise _not_registered(name) from error


def list_versions(client: MlflowClient, name: str) -> list[tuple[ModelVersion, list[str]]]:
    """Every version of the model, newest first, with the aliases it holds."""
    try:
        # Search results leave out aliases; the registered model has them all.
        aliases = client.get_registered_model(name).aliases
    except MlflowException as error:
        raise _not_registered(name) from error
    versions = client.search_model_versions(f"name = '{name}'")
    return [
        (version, [a for a, v in aliases.items() if str(v) == str(version.version)])
        for version in sorted(versions, key=lambda v: int(v.version), reverse=True)
    ]


def promote(
    client: MlflowClient,
    settings: MlflowSettings,
    version: str,
    reason: str = "promoted by hand",
    by: str | None = None,
    *,
    automatic: bool = False,
) -> ModelVersion:
    """Point the serving alias at `version`; the version it leaves keeps the `previous` alias.
    The move is recorded on `version` (`by` defaults to the user running this).

    A person's move (`automatic` False) marks the version it leaves demoted and clears the mark
    on `version`. The register stage's (`automatic`) never moves to a demoted version."""
    name = settings.model_name
    try:
        target = client.get_model_version(name, version)
    except MlflowException as error:
        raise RegistryError(f"{name} has no version {version}: see `list`.") from error
    if automatic and (demotion := demotion_of(target)) is not None:
        raise RegistryError(demotion.sentence())
    who = by or getpass.getuser()
    current = version_with_alias(client, name, settings.model_alias)
    if current is None or str(current.version) != str(target.version):
        if current is not None:
            left = f"'{settings.model_alias}' moved to version {target.version}: {reason}"
            move_alias(client, name, settings.previous_alias, current, who, left)
            if not automatic:
                mark_demoted(
                    client, name, current.version, who,
                    f"replaced by version {target.version} by hand: {reason}",
                )  # fmt: skip
        move_alias(client, name, settings.model_alias, target, who, reason)
        previous = str(current.version) if current is not None else None
        record_promotion(client, name, target.version, who, reason, previous)
        refresh_description(client, name)
    if not automatic:
        clear_demotion(client, name, target)
    return client.get_model_version(name, target.version)


def rollback(
    client: MlflowClient, settings: MlflowSettings, reason: str = "rolled back by hand"
) -> ModelVersion:
    """Return the serving alias to the version that held it before the last promotion."""
    previous = version_with_alias(client, settings.model_name, settings.previous_alias)
    if previous is None:
        raise RegistryError(
            f"No version of {settings.model_name} holds the '{settings.previous_alias}' alias, "
            "so there is nothing to roll back to; use `promote VERSION` instead."
        )
    return promote(client, settings, previous.version, f"rollback: {reason}")
