"""The registry's command line: list versions, promote one to the serving alias, roll back.

    mnist-registry list
    mnist-registry promote 3 --reason "beats version 2 on the new test pictures"
    mnist-registry rollback --reason "version 3 misreads sevens"
    mnist-registry history [--json]     # every move of every alias, newest first

Promotion moves the `production` alias (MLflow 3 replaced stages with aliases) and leaves the
version it replaces under the `previous` alias, which `rollback` returns to. Who promoted a
version, when, why and from which version is recorded on it (tags `promoted_*`). The version a
person moves `production` away from is marked demoted (tags `demoted_*`): the register stage never
promotes it again, until someone promotes it here by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from mnist_core.settings import MlflowSettings
from pipeline.registry.aliases import (
    RegistryError,
    alias_history,
    list_versions,
    promote,
    rollback,
)
from pipeline.registry.demotion import demotion_of
from pipeline.registry.history import AliasEvent


def _describe(version: ModelVersion, aliases: list[str]) -> str:
    accuracy = version.tags.get("test_accuracy", "-")
    demotion = demotion_of(version)
    demoted = f"by {demotion.by} at {demotion.at}" if demotion else "-"
    return (
        f"{version.version:>7}  {','.join(aliases) or '-':<22} {accuracy:<14} "
        f"{version.run_id:<32}  {demoted}"
    )


def _print_history(events: list[AliasEvent], as_json: bool) -> None:
    if as_json:
        print(json.dumps([asdict(event) for event in events], indent=2))
        return
    print(f"{'time (UTC)':<25}  {'alias':<10}  {'from → to':<10}  {'by':<14}  why  (run, commit)")
    for event in events:
        moved = f"{event.from_version or 'none'} → {event.to_version or 'none'}"
        source = f"run {(event.run_id or '-')[:12]}, commit {(event.commit or '-')[:12]}"
        print(
            f"{event.time:<25}  {event.alias:<10}  {moved:<10}  {event.by:<14}  "
            f"{event.reason}  ({source})"
        )
    if not events:
        print("No alias has moved yet (moves are recorded from this version of the project on).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list versions with their aliases and test accuracy")
    history_parser = commands.add_parser("history", help="every move of every alias, newest first")
    history_parser.add_argument("--json", action="store_true", help="as a JSON list")
    promote_parser = commands.add_parser("promote", help="serve VERSION")
    promote_parser.add_argument("version")
    rollback_parser = commands.add_parser("rollback", help="serve the version served before")
    for command in (promote_parser, rollback_parser):
        command.add_argument("--reason", required=True, help="why: recorded on the version")
    args = parser.parse_args(argv)

    settings = MlflowSettings()
    if missing := settings.missing_local_store():
        sys.exit(f"error: {missing}")
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    try:
        if args.command == "list":
            print(f"{'version':>7}  {'aliases':<22} {'test_accuracy':<14} {'run_id':<32}  demoted")
            for version, aliases in list_versions(client, settings.model_name):
                print(_describe(version, aliases))
            return
        if args.command == "history":
            _print_history(alias_history(client, settings.model_name), args.json)
            return
        changed = (
            promote(client, settings, args.version, args.reason)
            if args.command == "promote"
            else rollback(client, settings, args.reason)
        )
    except RegistryError as error:
        sys.exit(f"error: {error}")
    print(f"{settings.model_name} version {changed.version} now holds '{settings.model_alias}'.")


if __name__ == "__main__":
    main()
