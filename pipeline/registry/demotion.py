"""A person's decision that outranks the promotion policy: the version they moved `production`
away from (a rollback, or promoting another version by hand) is marked demoted — who, when,
why, as version tags `demoted_*` — and the register stage never promotes it again. Only a person
moving `production` back to it (`mnist-registry promote N --reason …`) clears the mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

BY, AT, BECAUSE = "demoted_by", "demoted_at", "demoted_because"


@dataclass(frozen=True)
class Demotion:
    version: str
    by: str
    at: str  # ISO 8601, UTC
    because: str

    def sentence(self) -> str:
        """Why the policy leaves this version alone, and what a person can do about it."""
        return (
            f"version {self.version} was demoted by {self.by} at {self.at} ({self.because}): "
            f"the policy never promotes it again; `mnist-registry promote {self.version} "
            "--reason …` clears the mark"
        )


def demotion_of(version: ModelVersion) -> Demotion | None:
    """The mark on `version`, or None when it is not demoted."""
    tags = version.tags
    if BY not in tags:
        return None
    return Demotion(str(version.version), tags[BY], tags.get(AT, "?"), tags.get(BECAUSE, "?"))


def mark_demoted(client: MlflowClient, name: str, version: str, by: str, because: str) -> None:
    tags = {BY: by, AT: datetime.now(UTC).isoformat(timespec="seconds"), BECAUSE: because}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def clear_demotion(client: MlflowClient, name: str, version: ModelVersion) -> None:
    for key in (BY, AT, BECAUSE):
        if key in version.tags:
            client.delete_model_version_tag(name, version.version, key)
