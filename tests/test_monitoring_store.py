"""The store of predictions, feedback and drift checks, on a SQLite file."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import insert

from monitoring.model_metrics import StoreCollector
from monitoring.records import FeedbackFilter, PredictionRecord, input_hash, new_prediction_id
from monitoring.store import (
    AlreadyAnswered,
    PredictionInsert,
    Store,
    UnknownPrediction,
    open_store,
)
from monitoring.tables import predictions


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = open_store(f"sqlite:///{tmp_path / 'predictions.db'}")
    yield opened
    opened.close()


def record(
    digit: int = 7,
    version: str = "3",
    fill: int = 0,
    created_at: datetime | None = None,
    uncertain: bool = False,
) -> PredictionRecord:
    pixels = np.full((28, 28), fill, np.uint8)
    pixels[5:20, 14] = 255
    probabilities = np.full(10, 0.01, np.float32)
    probabilities[digit] = 0.91
    extra = {"created_at": created_at} if created_at else {}
    return PredictionRecord(
        id=new_prediction_id(),
        model_version=version,
        source="canvas",
        pixels=pixels,
        digit=digit,
        probabilities=probabilities.tolist(),
        uncertain=uncertain,
        **extra,
    )


def test_predictions_come_back_as_arrays_oldest_first(store: Store) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    records = [
        record(digit=i % 10, version="3" if i < 4 else "4", fill=i,
               created_at=start + timedelta(seconds=i), uncertain=i == 2)
        for i in range(6)
    ]  # fmt: skip
    store.add_predictions(records)
    window = store.recent_predictions(4)
    assert len(window) == 4
    assert window.ids.tolist() == [r.id for r in records[2:]]
    assert window.pixels.shape == (4, 28, 28) and window.pixels.dtype == np.uint8
    assert (window.pixels[0] == records[2].pixels).all()
    assert window.probabilities.shape == (4, 10) and window.probabilities.dtype == np.float32
    assert window.digits.tolist() == [2, 3, 4, 5]
    assert window.uncertain.tolist() == [True, False, False, False]
    assert window.model_versions.tolist() == ["3", "3", "4", "4"]
    assert window.created_at[0] == np.datetime64("2026-01-01T00:00:02")
    assert store.recent_predictions(10, model_version="3").digits.tolist() == [0, 1, 2, 3]
    assert len(store.recent_predictions(10, model_version="9")) == 0


def test_the_writers_batch_insert_stores_what_sqlalchemy_would(store: Store) -> None:
    """`add_predictions` hands rows to the driver itself; they must read back as rows that
    SQLAlchemy's own insert wrote, a time given in another zone included."""
    berlin = timezone(timedelta(hours=1))
    moment = datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=berlin)
    fast, slow = record(digit=4, created_at=moment), record(digit=4, created_at=moment)
    store.add_predictions([fast])
    with store.engine.begin() as connection:
        values = dict(zip(PredictionInsert.COLUMNS, PredictionInsert.values(slow), strict=True))
        connection.execute(insert(predictions), [values])
        raw = connection.exec_driver_sql("SELECT * FROM predictions ORDER BY id").all()
    written_by_us, written_by_sqlalchemy = (tuple(row)[1:] for row in raw)  # all but the id
    assert written_by_us == written_by_sqlalchemy
    window = store.recent_predictions(2)
    assert window.created_at.tolist() == [datetime(2026, 3, 1, 11, 30, 15, 250_000)] * 2
    assert window.probabilities[0] == pytest.approx(np.asarray(fast.probabilities))
    assert window.uncertain.tolist() == [False, False] and window.digits.tolist() == [4, 4]


def test_only_28_by_28_grey_levels_are_accepted(store: Store) -> None:
    bad = PredictionRecord(new_prediction_id(), "3", "upload", np.zeros((280, 280), np.uint8),
                           7, [0.1] * 10, False)  # fmt: skip
    with pytest.raises(ValueError, match="28×28"):
        store.add_predictions([bad])
    nine = replace(record(), probabilities=[0.1] * 9)
    with pytest.raises(ValueError, match="10 probabilities"):
        store.add_predictions([nine])


def test_feedback_is_stored_once_and_pending(store: Store) -> None:
    logged = record(digit=7)
    store.add_predictions([logged])
    stored = store.add_feedback(logged.id, "1", client_hash="c" * 64)
    assert (stored.predicted, stored.model_version) == (7, "3")
    with pytest.raises(AlreadyAnswered):
        store.add_feedback(logged.id, "7", client_hash="c" * 64)
    with pytest.raises(UnknownPrediction):
        store.add_feedback(new_prediction_id(), "7", client_hash="c" * 64)
    [row] = store.list_feedback()
    assert (row.label, row.status, row.predicted) == ("1", "pending", 7)
    assert row.input_hash == input_hash(logged.pixels)
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert store.feedback_count_since("c" * 64, since) == 1
    assert store.feedback_count_since("d" * 64, since) == 0


def test_review_and_accepted_feedback_counts_a_duplicate_once(store: Store) -> None:
    same_a, same_b, other, refused = record(fill=1), record(fill=1), record(fill=2), record(fill=3)
    store.add_predictions([same_a, same_b, other, refused])
    store.add_feedback(same_a.id, "1", "a")
    store.add_feedback(same_b.id, "4", "b")
    store.add_feedback(other.id, "not_a_digit", "a")
    store.add_feedback(refused.id, "5", "a")
    assert store.review(FeedbackFilter(ids=(refused.id,)), "rejected") == 1
    assert store.review(FeedbackFilter(status="pending"), "accepted") == 3
    assert store.review(FeedbackFilter(status="pending"), "accepted") == 0
    accepted = store.accepted_feedback()
    assert len(accepted) == 2
    assert accepted.labels.tolist() == [1, -1]  # the earlier label of the duplicate input
    assert accepted.input_hash.tolist() == [input_hash(same_a.pixels), input_hash(other.pixels)]
    assert (accepted.pixels[1] == other.pixels).all()
    assert [row.label for row in store.list_feedback(FeedbackFilter(status="rejected"))] == ["5"]


def test_prune_keeps_the_newest_rows_and_those_with_feedback(store: Store) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    old = [record(created_at=now - timedelta(days=100 + i)) for i in range(3)]
    recent = [record(created_at=now - timedelta(minutes=i)) for i in range(5)]
    store.add_predictions(old + recent)
    store.add_feedback(old[0].id, "7", "a")
    assert store.prune(max_rows=3, max_age=timedelta(days=90), now=now) == 4
    kept = set(store.recent_predictions(100).ids.tolist())
    assert kept == {old[0].id, *(r.id for r in recent[:3])}


def test_latest_drift_and_the_scrape_time_gauges(store: Store) -> None:
    assert store.latest_drift() is None
    store.record_drift(500, "validation", {"class_mix_psi": 0.02}, [])
    latest = store.record_drift(500, "validation", {"class_mix_psi": 0.4, "confidence_ks": 0.1},
                                ["class_mix_psi"])  # fmt: skip
    assert store.latest_drift() == latest
    assert latest.created_at.tzinfo is not None
    logged = [record(digit=7, version="4") for _ in range(4)]
    store.add_predictions(logged)
    for one, label in zip(logged, ["7", "7", "1", "not_a_digit"], strict=True):
        store.add_feedback(one.id, label, "a")
    registry = CollectorRegistry()
    registry.register(StoreCollector(lambda: store))
    text = generate_latest(registry).decode()
    assert 'mnist_drift_score{test="class_mix_psi"} 0.4' in text
    assert 'mnist_drift_alarm{test="class_mix_psi"} 1.0' in text
    assert 'mnist_drift_alarm{test="confidence_ks"} 0.0' in text
    assert "mnist_drift_window_size 500.0" in text
    assert 'mnist_feedback_accuracy{model_version="4"} 0.5' in text
    assert 'mnist_feedback_answers{model_version="4"} 4.0' in text


def test_prediction_ids_are_unique_uuid7s_in_time_order() -> None:
    """Time-ordered ids keep the log's primary key appending at its end (see the function)."""
    first = [new_prediction_id() for _ in range(5_000)]
    time.sleep(0.002)
    later = new_prediction_id()
    assert len(set(first)) == len(first)
    assert all(re.fullmatch(r"[0-9a-f]{32}", one) for one in first)
    parsed = uuid.UUID(later)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert later > max(first)
    milliseconds = int(later[:12], 16)
    assert abs(milliseconds / 1000 - time.time()) < 5
