"""The challenger's answers on PostgreSQL, the shared stack's prediction log: a store at 0003
upgraded with nothing lost, answers written by the log's writer beside their predictions, pruned
with them, and compared as on SQLite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic import command
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine

from monitoring import migrate
from monitoring.model_metrics import MonitoringMetrics
from monitoring.records import ShadowAnswer, utc_now
from monitoring.settings import MonitoringSettings
from monitoring.shadow_report import compare
from monitoring.store import open_store
from monitoring.writer import PredictionLog
from tests.postgres import PostgresUnavailable, running_postgresql
from tests.test_shadow_report import fill_known, prediction


@pytest.fixture(scope="module")
def postgres_store() -> Iterator[str]:
    """A throwaway PostgreSQL server; its database's SQLAlchemy URL, as the API takes it."""
    try:
        with running_postgresql() as uri:
            yield uri.replace("postgresql://", "postgresql+psycopg://")
    except PostgresUnavailable as error:
        if os.environ.get("CI") == "true":  # CI installs PostgreSQL: there, a skip hides a bug
            pytest.fail(f"{error} CI must run this test.")
        pytest.skip(str(error))


def fetch(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql(sql).all()]
    finally:
        engine.dispose()


def test_shadow_answers_on_postgresql(postgres_store: str) -> None:
    # A store of the previous revision, with a prediction, upgraded in place.
    engine = create_engine(postgres_store)
    with engine.begin() as connection:
        command.upgrade(migrate._config(connection), "0003")
    engine.dispose()
    old = prediction(4, False)
    store = open_store(postgres_store)  # upgrades to head
    assert fetch(postgres_store, "SELECT version_num FROM alembic_version") == [(migrate.head(),)]
    store.add_predictions([old])
    assert store.count_predictions() == 1

    # The writer writes predictions and the challenger's answers, in one queue.
    settings = MonitoringSettings(MNIST_STORE_URL=postgres_store, MNIST_LOG_FLUSH_SECONDS=0.05)
    metrics = MonitoringMetrics(CollectorRegistry())
    writer = PredictionLog(settings, metrics)
    writer.start()
    fresh = prediction(7, True)
    assert writer.submit(fresh)
    writer.submit_shadow(ShadowAnswer(fresh.id, "2", 1, 0.4, True))
    writer.stop()
    assert fetch(
        postgres_store,
        "SELECT p.digit, p.uncertain, s.challenger_version, s.digit, s.uncertain "
        "FROM shadow_answers s JOIN predictions p ON p.id = s.prediction_id",
    ) == [(7, True, "2", 1, True)]
    assert metrics.shadow.dropped.labels("not_logged")._value.get() == 0

    # Compared as on SQLite (the same known rows and feedback).
    fill_known(store)
    by_version = {c.challenger.version: c for c in compare(store)}
    mine = by_version["2"]
    assert (mine.compared, mine.agreed, mine.reviewed) == (11, 7, 4)
    assert (mine.production.right, mine.challenger.right) == (2, 3)
    assert (mine.production.uncertain, mine.challenger.uncertain) == (2, 1)

    # Pruning everything old takes the answers with their predictions: those with feedback stay.
    later = utc_now() + timedelta(days=200)
    assert store.prune(max_rows=100, max_age=timedelta(days=90), now=later) == 8
    assert fetch(postgres_store, "SELECT count(*) FROM shadow_answers") == [(6,)]
    orphans = fetch(postgres_store, "SELECT count(*) FROM shadow_answers s WHERE NOT EXISTS "
                    "(SELECT 1 FROM predictions p WHERE p.id = s.prediction_id)")  # fmt: skip
    assert orphans == [(0,)]
    store.close()
