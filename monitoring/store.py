"""The store of logged predictions, user feedback and drift checks: three tables behind one
SQLAlchemy URL (a SQLite file by default, PostgreSQL on the shared stack).

Only the preprocessed 28×28 grey levels of a prediction are stored, never what was uploaded.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    TypeDecorator,
    case,
    cast,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from mnist_core.imaging import NUM_CLASSES

SIDE = 28
Source = Literal["canvas", "upload", "pixels", "batch"]
Status = Literal["pending", "accepted", "rejected"]
NOT_A_DIGIT = "not_a_digit"
LABELS = (*(str(digit) for digit in range(NUM_CLASSES)), NOT_A_DIGIT)
SOURCES: tuple[str, ...] = get_args(Source)
STATUSES: tuple[str, ...] = get_args(Status)


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone and returns naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: give the store timezone-aware times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", String(32), primary_key=True),  # uuid4 hex
    Column("created_at", UtcDateTime, nullable=False, index=True),
    Column("model_version", String(80), nullable=False, index=True),
    Column("source", String(16), nullable=False),
    Column("pixels", LargeBinary(SIDE * SIDE), nullable=False),  # the preprocessed 28×28 uint8
    Column("digit", SmallInteger, nullable=False),
    Column("probabilities", JSON, nullable=False),
    Column("uncertain", Boolean, nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("prediction_id", String(32), ForeignKey("predictions.id"), primary_key=True),
    Column("label", String(16), nullable=False),  # "0".."9" or "not_a_digit"
    Column("status", String(16), nullable=False, default="pending", index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("client_hash", String(64), nullable=False),
    Column("input_hash", String(64), nullable=False, index=True),  # sha256 of the 784 bytes
    Index("ix_feedback_client_time", "client_hash", "created_at"),
)

drift_checks = Table(
    "drift_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", UtcDateTime, nullable=False, index=True),
    Column("window_size", Integer, nullable=False),
    Column("reference", String(200), nullable=False),
    Column("scores", JSON, nullable=False),  # test name → score
    Column("alarms", JSON, nullable=False),  # names of the tests past their threshold
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def input_hash(pixels: np.ndarray) -> str:
    """The identity of a 28×28 input: equal grey levels, equal hash (de-duplication, and the
    side of the train/held-out split it lands on)."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def new_prediction_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class PredictionRecord:
    """One logged prediction, as the API hands it to the log writer."""

    id: str
    model_version: str
    source: Source
    pixels: np.ndarray  # (28, 28) uint8
    digit: int
    probabilities: Sequence[float]
    uncertain: bool
    created_at: datetime = field(default_factory=utc_now)

    def row(self) -> dict:
        if self.pixels.shape != (SIDE, SIDE) or self.pixels.dtype != np.uint8:
            raise ValueError(f"a logged input is a 28×28 uint8 array, not {self.pixels.shape}")
        return {
            "id": self.id,
            "created_at": self.created_at,
            "model_version": self.model_version,
            "source": self.source,
            "pixels": self.pixels.tobytes(),
            "digit": self.digit,
            "probabilities": [float(p) for p in self.probabilities],
            "uncertain": self.uncertain,
        }


@dataclass(frozen=True)
class PredictionWindow:
    """Logged predictions, oldest first, as arrays (what the drift check compares)."""

    ids: np.ndarray  # (N,) str
    pixels: np.ndarray  # (N, 28, 28) uint8
    probabilities: np.ndarray  # (N, 10) float32
    digits: np.ndarray  # (N,) int64
    uncertain: np.ndarray  # (N,) bool
    created_at: np.ndarray  # (N,) datetime64[us], UTC
    model_versions: np.ndarray  # (N,) str
    sources: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class DriftCheck:
    id: int
    created_at: datetime
    window_size: int
    reference: str
    scores: dict[str, float]
    alarms: list[str]


@dataclass(frozen=True)
class FeedbackSet:
    """Accepted feedback, one row per distinct input (duplicates count once)."""

    pixels: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64; -1: not a digit
    input_hash: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FeedbackRow:
    """One piece of feedback with the prediction it answers (what the review CLI shows)."""

    prediction_id: str
    label: str
    status: str
    created_at: datetime
    input_hash: str
    predicted: int
    model_version: str
    source: str


@dataclass(frozen=True)
class FeedbackFilter:
    """Which feedback to list or review; unset fields match everything."""

    status: Status | None = None
    label: str | None = None
    predicted: int | None = None
    model_version: str | None = None
    since: datetime | None = None
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredFeedback:
    """What `Store.add_feedback` recorded: the answer and the prediction it corrects."""

    prediction_id: str
    label: str
    predicted: int
    model_version: str


class UnknownPrediction(LookupError):
    pass


class AlreadyAnswered(Exception):
    pass


def _set_sqlite_pragmas(connection: object, _: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    # WAL: the API's writer and readers (feedback, the review CLI, drift) do not block each
    # other; a busy timeout instead of "database is locked" when several workers write.
    cursor.execute("PRAGMA journal_mode=WAL")
    # With WAL, NORMAL syncs at checkpoints only, not at every commit: a power cut may lose the
    # last writes of a log, never corrupt it.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_store(url: str) -> Store:
    """The store behind a SQLAlchemy URL, its tables created if missing."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _set_sqlite_pragmas)
    metadata.create_all(engine)
    return Store(engine)


class Store:
    """Reads and writes the three tables; each method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.dispose()

    # --- predictions -----------------------------------------------------------------------

    def add_predictions(self, records: Iterable[PredictionRecord]) -> int:
        rows = [record.row() for record in records]
        if rows:
            with self.engine.begin() as connection:
                connection.execute(insert(predictions), rows)
        return len(rows)

    def prune(self, max_rows: int, max_age: timedelta, now: datetime | None = None) -> int:
        """Delete predictions older than `max_age` or beyond the newest `max_rows`, keeping
        those that received feedback; returns how many went."""
        cutoff = (now or utc_now()) - max_age
        unanswered = ~exists().where(feedback.c.prediction_id == predictions.c.id)
        with self.engine.begin() as connection:
            nth_newest = connection.execute(
                select(predictions.c.created_at)
                .order_by(predictions.c.created_at.desc())
                .offset(max_rows)
                .limit(1)
            ).scalar()
            if nth_newest is not None:
                cutoff = max(cutoff, nth_newest + timedelta(microseconds=1))
            result = connection.execute(
                delete(predictions).where(predictions.c.created_at < cutoff, unanswered)
            )
        return result.rowcount

    def count_predictions(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(predictions)).scalar_one()

    def recent_predictions(self, limit: int, model_version: str | None = None) -> PredictionWindow:
        """The newest `limit` logged predictions (of one version if given), oldest first."""
        query = select(predictions).order_by(predictions.c.created_at.desc()).limit(limit)
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()[::-1]
        return PredictionWindow(
            ids=np.array([row.id for row in rows], dtype=str),
            pixels=np.frombuffer(b"".join(row.pixels for row in rows), np.uint8).reshape(
                -1, SIDE, SIDE
            ),
            probabilities=np.array([row.probabilities for row in rows], dtype=np.float32).reshape(
                -1, NUM_CLASSES
            ),
            digits=np.array([row.digit for row in rows], dtype=np.int64),
            uncertain=np.array([row.uncertain for row in rows], dtype=bool),
            created_at=np.array(
                [row.created_at.replace(tzinfo=None) for row in rows], dtype="datetime64[us]"
            ),
            model_versions=np.array([row.model_version for row in rows], dtype=str),
            sources=np.array([row.source for row in rows], dtype=str),
        )

    # --- feedback --------------------------------------------------------------------------

    def add_feedback(self, prediction_id: str, label: str, client_hash: str) -> StoredFeedback:
        """Store a user's answer as pending. Raises UnknownPrediction (no such logged
        prediction) or AlreadyAnswered (it has feedback already)."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)}")
        with self.engine.begin() as connection:
            row = connection.execute(
                select(predictions.c.pixels, predictions.c.digit, predictions.c.model_version)
                .where(predictions.c.id == prediction_id)
            ).first()  # fmt: skip
            if row is None:
                raise UnknownPrediction(prediction_id)
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(feedback).values(
                            prediction_id=prediction_id,
                            label=label,
                            status="pending",
                            created_at=utc_now(),
                            client_hash=client_hash,
                            input_hash=hashlib.sha256(row.pixels).hexdigest(),
                        )
                    )
            except IntegrityError:
                raise AlreadyAnswered(prediction_id) from None
        return StoredFeedback(prediction_id, label, row.digit, row.model_version)

    def feedback_count_since(self, client_hash: str, since: datetime) -> int:
        """How much feedback one client sent since `since` (the per-client budget)."""
        query = select(func.count()).where(
            feedback.c.client_hash == client_hash, feedback.c.created_at >= since
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def _matching(self, which: FeedbackFilter) -> list:
        conditions = []
        if which.status is not None:
            conditions.append(feedback.c.status == which.status)
        if which.label is not None:
            conditions.append(feedback.c.label == which.label)
        if which.predicted is not None:
            conditions.append(predictions.c.digit == which.predicted)
        if which.model_version is not None:
            conditions.append(predictions.c.model_version == which.model_version)
        if which.since is not None:
            conditions.append(feedback.c.created_at >= which.since)
        if which.ids:
            conditions.append(feedback.c.prediction_id.in_(which.ids))
        return conditions

    def list_feedback(self, which: FeedbackFilter = FeedbackFilter()) -> list[FeedbackRow]:
        """Feedback matching `which`, oldest first, with the prediction each one answers."""
        query = (
            select(
                feedback.c.prediction_id,
                feedback.c.label,
                feedback.c.status,
                feedback.c.created_at,
                feedback.c.input_hash,
                predictions.c.digit.label("predicted"),
                predictions.c.model_version,
                predictions.c.source,
            )
            .join(predictions, feedback.c.prediction_id == predictions.c.id)
            .where(*self._matching(which))
            .order_by(feedback.c.created_at)
        )
        with self.engine.connect() as connection:
            return [FeedbackRow(**row._asdict()) for row in connection.execute(query)]

    def review(self, which: FeedbackFilter, status: Status) -> int:
        """Set the status of the feedback matching `which`; returns how many rows changed."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        ids = [row.prediction_id for row in self.list_feedback(which)]
        if not ids:
            return 0
        with self.engine.begin() as connection:
            result = connection.execute(
                update(feedback)
                .where(feedback.c.prediction_id.in_(ids), feedback.c.status != status)
                .values(status=status)
            )
        return result.rowcount

    def accepted_feedback(self) -> FeedbackSet:
        """Accepted feedback for training, one row per distinct input: where the same 28×28
        input was labelled more than once, the earliest accepted label counts."""
        query = (
            select(feedback.c.input_hash, feedback.c.label, predictions.c.pixels)
            .join(predictions, feedback.c.prediction_id == predictions.c.id)
            .where(feedback.c.status == "accepted")
            .order_by(feedback.c.created_at, feedback.c.prediction_id)
        )
        first: dict[str, tuple[str, bytes]] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                first.setdefault(row.input_hash, (row.label, row.pixels))
        return FeedbackSet(
            pixels=np.frombuffer(b"".join(p for _, p in first.values()), np.uint8).reshape(
                -1, SIDE, SIDE
            ),
            labels=np.array(
                [-1 if label == NOT_A_DIGIT else int(label) for label, _ in first.values()],
                dtype=np.int64,
            ),
            input_hash=np.array(list(first), dtype=str),
        )

    def feedback_accuracy(self) -> dict[str, tuple[int, int]]:
        """Per model version: (feedback that confirmed the prediction, all feedback not
        rejected), from which the accuracy users report follows."""
        confirmed = func.sum(
            case((feedback.c.label == cast(predictions.c.digit, String), 1), else_=0)
        )
        query = (
            select(predictions.c.model_version, confirmed, func.count())
            .join(predictions, feedback.c.prediction_id == predictions.c.id)
            .where(feedback.c.status != "rejected")
            .group_by(predictions.c.model_version)
        )
        with self.engine.connect() as connection:
            return {
                version: (int(right or 0), int(total))
                for version, right, total in connection.execute(query)
            }

    # --- drift checks ----------------------------------------------------------------------

    def record_drift(
        self, window_size: int, reference: str, scores: dict[str, float], alarms: list[str]
    ) -> DriftCheck:
        """Store one drift check's result; the API's gauges show the latest."""
        values = {
            "created_at": utc_now(),
            "window_size": window_size,
            "reference": reference,
            "scores": {name: float(score) for name, score in scores.items()},
            "alarms": list(alarms),
        }
        with self.engine.begin() as connection:
            new_id = connection.execute(insert(drift_checks).values(**values)).inserted_primary_key
        return DriftCheck(id=new_id[0], **values)

    def latest_drift(self) -> DriftCheck | None:
        query = select(drift_checks).order_by(drift_checks.c.id.desc()).limit(1)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else DriftCheck(**row._asdict())
