"""The prediction store's schema, versioned by Alembic (`monitoring/migrations/versions`).

    python -m monitoring.migrate upgrade     # the store of MNIST_STORE_URL (or --store) to head
    python -m monitoring.migrate current     # its revision, and the head

Every process opens the store through `open_store`, which upgrades it first: once, under a lock
(a file lock beside a SQLite file, an advisory lock on PostgreSQL), so that the workers starting
together on a fresh store neither race to create its tables nor log an error; the first one
upgrades, the others find it at head. Nothing reads or writes the store before that.

Alembic runs one migration at a time in a process (`monitoring.alembic_lock`).

A store made before the schema was versioned has no `alembic_version` table: it is adopted at
the revision its tables match (0001: probabilities as JSON; 0002: as float32 bytes), then
upgraded in place like any other.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Connection, Engine, create_engine, inspect

from monitoring.alembic_lock import ALEMBIC
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
        # Connected first: a store that is slow to answer holds up no other migration.
        with _lock(engine), engine.begin() as connection, ALEMBIC:
            _adopt(connection)
            if current(connection) != head():
                log.info("Upgrading the prediction store to revision %s", head())
            command.upgrade(_config(connection), "head")
            return current(connection) or ""
    finally:
        engine.dispose()


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
