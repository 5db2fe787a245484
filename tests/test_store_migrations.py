"""The prediction store's Alembic migrations: older stores upgraded in place with nothing lost,
a fresh store created once by processes that open it together, the operator's command."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import create_engine

from monitoring import migrate
from monitoring.records import ALL_FEEDBACK
from monitoring.store import open_store
from tests.conftest import PROJECT_ROOT

# A store written by the code of a08c526 (create_all of its tables, before Alembic), as dumped
# by sqlite3's `.dump`: six predictions, two feedbacks (one accepted), a drift check.
TODAYS_STORE = PROJECT_ROOT / "tests" / "data" / "store_a08c526.sql"


def rows(path: Path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def revision(path: Path) -> str:
    return rows(path, "alembic_version")[0][0]


def test_a_store_of_a08c526_is_upgraded_in_place_with_nothing_lost(tmp_path: Path) -> None:
    path = tmp_path / "predictions.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(TODAYS_STORE.read_text())
    before = {table: rows(path, table) for table in ("predictions", "feedback", "drift_checks")}
    store = open_store(f"sqlite:///{path}")
    window = store.recent_predictions(10)
    feedback = store.list_feedback(ALL_FEEDBACK)
    drift = store.latest_drift()
    store.close()
    assert revision(path) == migrate.head()
    after = {table: rows(path, table) for table in before}
    # The feedback's client keys, plain SHA-256 of an address before 0003, are re-keyed with
    # the secret the store now keeps: everything else is as it was.
    (secret,) = [value for name, value in rows(path, "secrets") if name == "client_key"]
    rekeyed = [
        (*row[:4], hmac.new(secret.encode(), row[4].encode(), hashlib.sha256).hexdigest(), row[5])
        for row in before["feedback"]
    ]
    assert after == {**before, "feedback": rekeyed}
    assert len(window) == 6 and window.probabilities.shape == (6, 10)
    assert [row.status for row in feedback] == ["accepted", "pending"]
    assert drift is not None and drift.alarms == ["chi2_digits"]


def test_a_store_of_the_first_schema_gets_its_probabilities_converted(tmp_path: Path) -> None:
    """The first version kept probabilities as JSON: the store that a08c526 refused."""
    path = tmp_path / "predictions.db"
    engine = create_engine(f"sqlite:///{path}")
    probabilities = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.55]
    with engine.begin() as connection:
        command.upgrade(migrate._config(connection), "0001")
        connection.exec_driver_sql("DROP TABLE alembic_version")  # made before Alembic
        connection.exec_driver_sql(
            "INSERT INTO predictions VALUES (?, '2026-11-01 10:00:00', '1', 'canvas', ?, 9, ?, 1)",
            ("a" * 32, bytes(784), json.dumps(probabilities)),
        )
        connection.exec_driver_sql(
            "INSERT INTO feedback VALUES (?, '9', 'pending', '2026-11-01 10:00:01', ?, ?)",
            ("a" * 32, "c" * 64, "d" * 64),
        )
    engine.dispose()
    store = open_store(f"sqlite:///{path}")
    window = store.recent_predictions(10)
    feedback = store.list_feedback(ALL_FEEDBACK)
    store.close()
    assert revision(path) == migrate.head()
    assert window.ids.tolist() == ["a" * 32]
    assert np.allclose(window.probabilities[0], probabilities)
    assert [(row.prediction_id, row.label) for row in feedback] == [("a" * 32, "9")]


OPEN_WHEN_TOLD = """
import sys, time
from pathlib import Path
from monitoring.store import open_store
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
open_store(sys.argv[1]).count_predictions()
"""


def test_processes_opening_a_fresh_store_together_create_it_once_without_error(
    tmp_path: Path,
) -> None:
    url, go = f"sqlite:///{tmp_path / 'predictions.db'}", tmp_path / "go"
    command = [sys.executable, "-c", OPEN_WHEN_TOLD, url, str(go)]
    openers = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(3)  # all imported, each waiting for the word
    go.touch()
    outcomes = [(opener.wait(timeout=60), opener.stderr.read()) for opener in openers]
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert not any("Error" in text or "already exists" in text for _, text in outcomes), outcomes
    assert revision(tmp_path / "predictions.db") == migrate.head()


@pytest.mark.parametrize("fresh", [True, False])
def test_the_operators_command_upgrades_and_tells_the_revision(tmp_path: Path, fresh: bool) -> None:
    path = tmp_path / "predictions.db"
    if not fresh:
        with sqlite3.connect(path) as connection:
            connection.executescript(TODAYS_STORE.read_text())

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "monitoring.migrate", *args, "--store", f"sqlite:///{path}"],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        return result.stdout

    assert run("upgrade").strip() == f"the prediction store is at revision {migrate.head()} (head)"
    assert run("current").strip() == f"revision {migrate.head()}; head {migrate.head()}"


def test_a_store_at_0003_gets_the_shadow_table_with_nothing_lost(tmp_path: Path) -> None:
    """0004 adds `shadow_answers` (the challenger's answers); the rows already there stay."""
    path = tmp_path / "predictions.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.upgrade(migrate._config(connection), "0003")
        connection.exec_driver_sql(
            "INSERT INTO predictions VALUES (?, '2026-11-01 10:00:00', '1', 'canvas', ?, 9, ?, 0)",
            ("a" * 32, bytes(784), bytes(40)),
        )
        connection.exec_driver_sql(
            "INSERT INTO feedback VALUES (?, '9', 'accepted', '2026-11-01 10:00:01', ?, ?)",
            ("a" * 32, "c" * 64, "d" * 64),
        )
    engine.dispose()
    tables = ("predictions", "feedback", "secrets")
    before = {table: rows(path, table) for table in tables}
    assert revision(path) == "0003"
    store = open_store(f"sqlite:///{path}")
    store.close()
    assert revision(path) == migrate.head() == "0004"
    assert {table: rows(path, table) for table in tables} == before
    assert rows(path, "shadow_answers") == []
