"""The model registry: list versions, promote one to the serving alias, roll back.

    python -m pipeline.registry list
    python -m pipeline.registry promote 3
    python -m pipeline.registry rollback

Promotion moves the `production` alias (MLflow 3 replaced stages with aliases) and leaves the
version it replaces under the `previous` alias, which `rollback` returns to.
"""

from __future__ import annotations

import argparse
import sys

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_core.settings import MlflowSettings


class RegistryError(RuntimeError):
    """A registry request that cannot be carried out, with what to do instead."""


def version_with_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def list_versions(client: MlflowClient, name: str) -> list[tuple[ModelVersion, list[str]]]:
    """Every version of the model, newest first, with the aliases it holds."""
    try:
        # Search results leave out aliases; the registered model has them all.
        aliases = client.get_registered_model(name).aliases
    except MlflowException as error:
        raise RegistryError(f"No model named {name} is registered yet: run `dvc repro`.") from error
    versions = client.search_model_versions(f"name = '{name}'")
    return [
        (version, [a for a, v in aliases.items() if str(v) == str(version.version)])
        for version in sorted(versions, key=lambda v: int(v.version), reverse=True)
    ]


def promote(client: MlflowClient, settings: MlflowSettings, version: str) -> ModelVersion:
    """Point the serving alias at `version`; the version it leaves keeps the `previous` alias."""
    name = settings.model_name
    try:
        target = client.get_model_version(name, version)
    except MlflowException as error:
        raise RegistryError(f"{name} has no version {version}: see `list`.") from error
    current = version_with_alias(client, name, settings.model_alias)
    if current is not None and str(current.version) == str(target.version):
        return target
    if current is not None:
        client.set_registered_model_alias(name, settings.previous_alias, current.version)
    client.set_registered_model_alias(name, settings.model_alias, target.version)
    return client.get_model_version(name, target.version)


def rollback(client: MlflowClient, settings: MlflowSettings) -> ModelVersion:
    """Return the serving alias to the version that held it before the last promotion."""
    previous = version_with_alias(client, settings.model_name, settings.previous_alias)
    if previous is None:
        raise RegistryError(
            f"No version of {settings.model_name} holds the '{settings.previous_alias}' alias, "
            "so there is nothing to roll back to; use `promote VERSION` instead."
        )
    return promote(client, settings, previous.version)


def _describe(version: ModelVersion, aliases: list[str]) -> str:
    accuracy = version.tags.get("test_accuracy", "-")
    return f"{version.version:>7}  {','.join(aliases) or '-':<22} {accuracy:<14} {version.run_id}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list versions with their aliases and test accuracy")
    promote_parser = commands.add_parser("promote", help="serve VERSION")
    promote_parser.add_argument("version")
    commands.add_parser("rollback", help="serve the version that was served before")
    args = parser.parse_args(argv)

    settings = MlflowSettings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    try:
        if args.command == "list":
            print(f"{'version':>7}  {'aliases':<22} {'test_accuracy':<14} run_id")
            for version, aliases in list_versions(client, settings.model_name):
                print(_describe(version, aliases))
            return
        changed = (
            promote(client, settings, args.version)
            if args.command == "promote"
            else (rollback(client, settings))
        )
    except RegistryError as error:
        sys.exit(f"error: {error}")
    print(f"{settings.model_name} version {changed.version} now holds '{settings.model_alias}'.")


if __name__ == "__main__":
    main()
