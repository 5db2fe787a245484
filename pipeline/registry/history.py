"""The aliases' history, kept in the registry itself: every move of an alias is one tag on the
registered model, so it reads the same from SQLite and from a shared `mlflow server`.

One tag per event (key `alias_event.<UTC nanoseconds>.<alias>`) rather than one growing JSON
value: a registry tag holds at most 5000 characters in MLflow's SQL schema, and two writers
adding events at once each add their own key instead of overwriting each other's list.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

EVENT_PREFIX = "alias_event."
# MLflow's SQL schema stores a registry tag's value, and a description, in VARCHAR(5000).
TAG_VALUE_LIMIT = 5000
REASON_LIMIT = 2000  # a longer reason is cut, so that an event always fits in one tag


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: `to_version` None when the alias was removed."""

    time: str  # ISO 8601, UTC
    alias: str
    from_version: str | None
    to_version: str | None
    by: str  # "register stage", or the user who ran `mnist-registry`
    reason: str
    run_id: str | None  # the training run of `to_version`
    commit: str | None  # the git commit `to_version` was trained from

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AliasEvent:
        return cls(**json.loads(text))


def _cut(text: str, limit: int = REASON_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record_event(client: MlflowClient, name: str, event: AliasEvent) -> None:
    """Add `event` to the history of registered model `name`."""
    key = f"{EVENT_PREFIX}{time.time_ns():020d}.{event.alias}"
    client.set_registered_model_tag(name, key, event.to_json())


def move_alias(
    client: MlflowClient,
    name: str,
    alias: str,
    target: ModelVersion,
    by: str,
    reason: str,
) -> AliasEvent | None:
    """Point `alias` at `target` and record the move; None (and nothing recorded) when the alias
    already points there."""
    current = client.get_registered_model(name).aliases.get(alias)
    if current is not None and str(current) == str(target.version):
        return None
    client.set_registered_model_alias(name, alias, target.version)
    event = AliasEvent(
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        alias=alias,
        from_version=None if current is None else str(current),
        to_version=str(target.version),
        by=by,
        reason=_cut(reason),
        run_id=target.run_id,
        commit=target.tags.get("git_commit"),
    )
    record_event(client, name, event)
    return event


def read_history(client: MlflowClient, name: str) -> list[AliasEvent]:
    """Every recorded move of the model's aliases, newest first."""
    tags = client.get_registered_model(name).tags
    keys = sorted((key for key in tags if key.startswith(EVENT_PREFIX)), reverse=True)
    return [AliasEvent.from_json(tags[key]) for key in keys]


HISTORY_HEADING = "## Alias history, newest first"
ROW_REASON_LIMIT = 120


def _row(event: AliasEvent) -> str:
    moved = f"{event.from_version or 'none'} → {event.to_version or 'none'}"
    reason = _cut(event.reason, ROW_REASON_LIMIT).replace("|", "\\|").replace("\n", " ")
    commit = f"`{event.commit[:8]}`" if event.commit else "-"
    return f"| {event.time} | `{event.alias}` | {moved} | {event.by} | {reason} | {commit} |"


def history_markdown(events: list[AliasEvent], limit: int) -> str:
    """The newest `events` as a Markdown table of at most `limit` characters; the rest are
    counted, for `mnist-registry history` to show."""
    lines = [
        HISTORY_HEADING,
        "",
        "| time (UTC) | alias | version | by | why | commit |",
        "|---|---|---|---|---|---|",
    ]
    footer = "\n\n{} older moves: `mnist-registry history` lists them all."
    size = sum(len(line) + 1 for line in lines) + len(footer) + 10
    shown = 0
    for event in events:
        row = _row(event)
        if size + len(row) + 1 > limit:
            break
        lines.append(row)
        size += len(row) + 1
        shown += 1
    text = "\n".join(lines)
    if not events:
        return text + "\n\nNo alias has moved yet."
    return text + (footer.format(len(events) - shown) if shown < len(events) else "")


def refresh_description(client: MlflowClient, name: str, policy: str | None = None) -> None:
    """Show the history in the registered model's description (the MLflow UI's model page),
    under `policy`, or under the text already there when `policy` is None."""
    current = client.get_registered_model(name).description or ""
    top = policy if policy is not None else current.split(HISTORY_HEADING)[0].rstrip()
    room = TAG_VALUE_LIMIT - len(top) - 2
    client.update_registered_model(
        name, f"{top}\n\n{history_markdown(read_history(client, name), room)}"
    )
