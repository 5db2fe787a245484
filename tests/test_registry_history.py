"""The aliases' history, kept in the registry: every move, newest first, within MLflow's limits."""

from __future__ import annotations

import getpass
import json

import pytest
from mlflow.tracking import MlflowClient

from pipeline.registry.commands import main as registry_cli
from pipeline.registry.history import (
    EVENT_PREFIX,
    HISTORY_HEADING,
    TAG_VALUE_LIMIT,
    AliasEvent,
    history_markdown,
    read_history,
)
from tests.conftest import with_more_versions

MODEL = "mnist-cnn"


def event(number: int, reason: str = "why") -> AliasEvent:
    return AliasEvent(f"2026-12-01T10:00:{number:02d}+00:00", "production", str(number),
                      str(number + 1), "alice", reason, "r" * 32, "c" * 40)  # fmt: skip


def test_the_description_fits_mlflows_column_and_counts_what_it_leaves_out() -> None:
    events = [event(n, "a reason | with a pipe " * 20) for n in range(200)]
    text = history_markdown(events, 3000)
    assert len(text) <= 3000
    rows = [line for line in text.splitlines() if line.startswith("| 2026")]
    assert rows[0].startswith(f"| {events[0].time} ")  # newest first, as given
    assert "\\|" in rows[0] and "…" in rows[0]  # a pipe cannot break the table; long reasons cut
    assert f"{200 - len(rows)} older moves: `mnist-registry history`" in text
    assert "No alias has moved yet" in history_markdown([], 3000)


@pytest.fixture
def registry(registry_copy: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """The tiny registry (version 1 in production, put there by the register stage) with a
    version 2 of the same model."""
    return with_more_versions(registry_copy, monkeypatch)


def test_history_lists_every_move_newest_first(
    registry: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    first = registry.get_model_version(MODEL, "1")
    long_reason = "the canvas digits " * 400  # longer than a registry tag may hold
    registry_cli(["promote", "2", "--reason", long_reason])
    registry_cli(["rollback", "--reason", "2 misreads sevens"])
    capsys.readouterr()
    registry_cli(["history", "--json"])
    moves = [
        (e["alias"], e["from_version"], e["to_version"], e["by"], e["reason"][:40])
        for e in json.loads(capsys.readouterr().out)
    ]
    me = getpass.getuser()
    assert moves[:4] == [
        ("production", "2", "1", me, "rollback: 2 misreads sevens"),
        ("previous", "1", "2", me, "'production' moved to version 1: rollbac"),
        ("production", "1", "2", me, long_reason[:40]),
        ("previous", None, "1", me, "'production' moved to version 2: the can"),
    ]
    assert moves[4][:4] == ("production", None, "1", "register stage")
    assert moves[4][4].startswith("test accuracy ")  # the policy's own reason
    newest = read_history(registry, MODEL)[0]
    assert (newest.run_id, newest.commit) == (first.run_id, first.tags["git_commit"])
    tags = registry.get_registered_model(MODEL).tags
    assert len([key for key in tags if key.startswith(EVENT_PREFIX)]) == 5  # one tag per move
    assert all(len(value) <= TAG_VALUE_LIMIT for value in tags.values())

    registry_cli(["history"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[1:5] == ["production", "2", "→", "1"]
    assert "rollback: 2 misreads sevens" in lines[1]
    assert f"commit {first.tags['git_commit'][:12]}" in lines[1]

    # The MLflow UI's model page: the policy, then the moves, newest first.
    description = registry.get_registered_model(MODEL).description
    assert len(description) <= TAG_VALUE_LIMIT
    policy, history = description.split(HISTORY_HEADING)
    assert "never moves on its own to a version a person moved it away from" in policy
    rows = [line for line in history.splitlines() if line.startswith("| 20")]
    assert len(rows) == 5 and "| `production` | 2 → 1 |" in rows[0]
    assert "rollback: 2 misreads sevens" in rows[0]


def test_history_of_an_empty_store_says_what_to_do(workdir) -> None:
    (workdir / "mlflow.db").touch()
    with pytest.raises(SystemExit, match="No model named mnist-cnn is registered yet"):
        registry_cli(["history"])
