"""The prediction store's schema, versioned by Alembic (`monitoring/migrations/versions`).

    python -m monitoring.migrate upgrade     # the store of MNIST_STORE_URL (or --store) to head
    python -m monitoring.migrate current     # its revision, and the head

Every process opens the store through `open_store`, which upgrades it first: once, under a lock
(a file lock beside a SQLite file, an advisory lock on PostgreSQL), so that the workers starting
together on a fresh store neither race to create its tables nor log an error; the first one
upgrades, the others find it at head. Nothing reads or writes the store before that.

The API upgrades in a child process (`upgrade_in_child_process`): Alembic's `op` and `context`
are process-wide, and MLflow runs Alembic too when it opens a SQLite registry, on another of
the API's threads; two upgrades on two threads would run each other's operations (seen: a
segmentation fault in SQLite).

A store made before the schema was versioned has no `alembic_version` table: it is adopted at
the revision its tables match (0001: probabilities as JSON; 0002: as float32 bytes), then
upgraded in place like any other.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Connection, Engine, create_engine, inspect

from monitoring.settings import MonitoringSettings

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_lock's key: any 64-bit number the store's other users do not lock.
POSTGRES_LOCK_KEY = 0x6D6E697374  # "mnist"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@contextlib.contextmanager
def _lock(engine: Engine) -> Iterator[None]:
    """One upgrader at a time, across processes."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        with open(f"{database}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
    elif engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({POSTGRES_LOCK_KEY})")
            try:
                yield
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({POSTGRES_LOCK_KEY})")
    else:
        yield


def _adopt(connection: Connection) -> None:
    """Stamp a store made before Alembic with the revision its tables match."""
    found = inspect(connection)
    if current(connection) is not None or not found.has_table("predictions"):
        return
    types = {column["name"]: column["type"] for column in found.get_columns("predictions")}
    revision = "0001" if isinstance(types.get("probabilities"), JSON) else "0002"
    log.info("The prediction store predates its versioned schema: taken as revision %s", revision)
    command.stamp(_config(connection), revision)


def upgrade(url: str) -> str:
    """Upgrade the store at `url` to the head revision (creating it if new); returns it."""
    # Its own engine: without the store's `foreign_keys=ON`, under which SQLite's copy of a
    # table (how batch mode alters a column) would trip the feedback table's foreign key.
    engine = create_engine(url)
    try:
        with _lock(engine), engine.begin() as connection:
            _adopt(connection)
            if current(connection) != head():
                log.info("Upgrading the prediction store to revision %s", head())
            command.upgrade(_config(connection), "head")
            return current(connection) or ""
    finally:
        engine.dispose()


def upgrade_in_child_process(url: str, timeout: float = 300) -> None:
    """`upgrade(url)` in a process of its own (see above); raises RuntimeError with its error."""
    done = subprocess.run(
        [sys.executable, "-m", "monitoring.migrate", "upgrade"],
        env={
            **os.environ,
            "MNIST_STORE_URL": url,
        },  # not on the command line: it may hold a password
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise RuntimeError(lines[-1].removeprefix("error: "))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("upgrade", "current"))
    parser.add_argument("--store", help="a SQLAlchemy URL (default: $MNIST_STORE_URL)")
    args = parser.parse_args(argv)
    url = args.store or MonitoringSettings().store_url
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.action == "upgrade":
        try:
            revision = upgrade(url)
        except Exception as error:  # a sentence for the operator (and the API's log)
            print(f"error: the prediction store cannot be upgraded: {error}", file=sys.stderr)
            return 1
        print(f"the prediction store is at revision {revision} (head)")
        return 0
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            print(f"revision {current(connection) or 'none (not versioned)'}; head {head()}")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
