"""The registry's command line: list versions, promote one to the serving alias, roll back.

    mnist-registry list
    mnist-registry promote 3 --reason "beats version 2 on the new test pictures"
    mnist-registry rollback --reason "version 3 misreads sevens"
    mnist-registry history [--json]     # every move of every alias, newest first
    mnist-registry compare [--json]     # production against the challenger, on logged traffic

Promotion moves the `production` alias (MLflow 3 replaced stages with aliases) and leaves the
version it replaces under the `previous` alias, which `rollback` returns to. Who promoted a
version, when, why and from which version is recorded on it (tags `promoted_*`). The version a
person moves `production` away from is marked demoted (tags `demoted_*`): the register stage never
promotes it again, until someone promotes it here by hand. `compare` reads the API's prediction
log ($MNIST_STORE_URL, or --store): what the `challenger` version answered in the shadow of
production, and each one's accuracy on the feedback users gave and a person accepted.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mnist_core.settings import MlflowSettings
from monitoring.settings import MonitoringSettings
from monitoring.shadow_report import compare, describe
from monitoring.store import Store, open_store
from pipeline.registry.aliases import (
    RegistryError,
    alias_history,
    list_versions,
    promote,
    rollback,
    version_with_alias,
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


def _version(client: MlflowClient, name: str, alias: str) -> str | None:
    held = version_with_alias(client, name, alias)
    return None if held is None else str(held.version)


def _existing_store(url: str) -> Store:
    """The prediction log at `url`; a SQLite file that is not there is an error, not a new,
    empty log (a mistyped path would otherwise report that nothing was compared)."""
    parsed = make_url(url)
    in_a_file = parsed.database not in (None, "", ":memory:")
    if parsed.get_backend_name() == "sqlite" and in_a_file and not Path(parsed.database).is_file():
        raise RegistryError(
            f"there is no prediction log at {parsed.database}: the API writes it where "
            "MNIST_STORE_URL says; give that URL (or --store)"
        )
    return open_store(url)


def _compare(client: MlflowClient, settings: MlflowSettings, args: argparse.Namespace) -> None:
    """Print production against the challenger, from the prediction log."""
    name, alias = settings.model_name, settings.challenger_alias
    challenger = args.challenger or _version(client, name, alias)
    production = _version(client, name, settings.model_alias)
    url = args.store or MonitoringSettings().store_url
    try:
        store = _existing_store(url)
        try:
            comparisons = compare(store, challenger)
        finally:
            store.close()
    except SQLAlchemyError as error:
        reason = str(error).splitlines()[0]
        raise RegistryError(
            f"the prediction log at {make_url(url).render_as_string()} cannot be read: {reason}"
        ) from None
    if args.json:
        body = {
            "production": production,
            "challenger": challenger,
            "comparisons": [one.as_dict() for one in comparisons],
        }
        print(json.dumps(body, indent=2))
        return
    if challenger is None:
        print(
            f"No version of {name} holds the alias '{alias}': the API scores nothing in the "
            "shadow. A version gets it from the register stage (an experiment, another branch, "
            "`register.promote: manual`); name an earlier one with --challenger."
        )
    elif not comparisons:
        print(
            f"Version {challenger} holds '{alias}', but the prediction log has no answer of it "
            "yet: the API scores it in the shadow once it has loaded it (within "
            "MNIST_POLL_SECONDS) and served requests."
        )
    for comparison in comparisons:
        print("\n".join(describe(comparison)))
    if production is not None and challenger is not None:
        print(f"\nNow: production is version {production}, challenger version {challenger}.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list versions with their aliases and test accuracy")
    history_parser = commands.add_parser("history", help="every move of every alias, newest first")
    history_parser.add_argument("--json", action="store_true", help="as a JSON list")
    compare_parser = commands.add_parser(
        "compare", help="production against the challenger, on the traffic the API logged"
    )
    compare_parser.add_argument("--json", action="store_true", help="as JSON")
    compare_parser.add_argument(
        "--challenger", help="the challenger version to look at (default: the alias's)"
    )
    compare_parser.add_argument(
        "--store", help="SQLAlchemy URL of the prediction log (default $MNIST_STORE_URL)"
    )
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
        if args.command == "compare":
            _compare(client, settings, args)
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
