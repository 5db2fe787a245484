"""The store of logged predictions, user feedback and drift checks (the tables are in
`monitoring.tables`): each method is one short transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import (
    Column,
    Dialect,
    Engine,
    String,
    Table,
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

from mnist_core.labels import LABELS, label_code
from monitoring.migrate import upgrade
from monitoring.records import (
    ALL_FEEDBACK,
    AlreadyAnswered,
    DriftCheck,
    FeedbackFilter,
    FeedbackRow,
    FeedbackSet,
    PredictionRecord,
    PredictionWindow,
    ShadowAnswer,
    StoredFeedback,
    UnknownPrediction,
    input_hash,
    utc_now,
)
from monitoring.tables import (
    CLIENT_KEY_SECRET,
    STATUSES,
    Status,
    decode_pixels,
    decode_probabilities,
    drift_checks,
    encode_pixels,
    encode_probabilities,
    feedback,
    predictions,
    secrets,
    shadow_answers,
)


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
    """The store behind a SQLAlchemy URL, created or upgraded to the current schema first
    (`monitoring.migrate`)."""
    upgrade(url)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _set_sqlite_pragmas)
    return Store(engine)


def bind_processor(column: Column, dialect: Dialect) -> Callable | None:
    """What `Connection.execute` does to a column's value for this dialect's driver."""
    return column.type.dialect_impl(dialect).bind_processor(dialect)


class DriverInsert:
    """A table's INSERT, compiled once for the engine's dialect and run as one DBAPI
    `executemany` per batch. Through `Connection.execute` SQLAlchemy processed every row's
    parameters one by one, which cost the API's worker more CPU than the database's insert."""

    table: Table

    def __init__(self, engine: Engine) -> None:
        compiled = insert(self.table).compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self.columns = tuple(column.name for column in self.table.columns)
        # qmark drivers (SQLite) take tuples in the table's column order; named ones (psycopg)
        # take dicts.
        self.positional = compiled.positional
        if self.positional and tuple(compiled.positiontup) != self.columns:
            raise RuntimeError(f"unexpected order of the INSERT's parameters: {self.sql}")
        # What each column's type does to a value for this driver (a UTC datetime to SQLite's
        # text, a bool to its integer): the processing `execute` would do, looked up once.
        self.processors = [
            (index, processor)
            for index, column in enumerate(self.table.columns)
            if (processor := bind_processor(column, engine.dialect)) is not None
        ]

    def driver_values(self, values: tuple) -> tuple | dict:
        """One row's values, in the table's column order, as the driver takes them."""
        processed = list(values)
        for index, process in self.processors:
            processed[index] = process(processed[index])
        if self.positional:
            return tuple(processed)
        return dict(zip(self.columns, processed, strict=True))


class PredictionInsert(DriverInsert):
    """The predictions' INSERT (see `DriverInsert`)."""

    table = predictions
    COLUMNS = tuple(column.name for column in predictions.columns)

    @staticmethod
    def values(record: PredictionRecord) -> tuple:
        """A record as the table's columns take it, in their order (its arrays checked and
        encoded)."""
        return (
            record.id,
            record.created_at,
            record.model_version,
            record.source,
            encode_pixels(record.pixels),
            int(record.digit),
            encode_probabilities(record.probabilities),
            bool(record.uncertain),
        )

    def parameters(self, record: PredictionRecord) -> tuple | dict:
        """A record as the driver takes it."""
        return self.driver_values(self.values(record))


class ShadowAnswerInsert(DriverInsert):
    """The challenger's answers' INSERT (see `DriverInsert`)."""

    table = shadow_answers

    def parameters(self, answer: ShadowAnswer) -> tuple | dict:
        return self.driver_values(
            (
                answer.prediction_id,
                answer.created_at,
                answer.challenger_version,
                int(answer.digit),
                float(answer.confidence),
                bool(answer.uncertain),
            )
        )


class Store:
    """Reads and writes the three tables; each method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = PredictionInsert(engine)
        self._shadow_insert = ShadowAnswerInsert(engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- predictions -----------------------------------------------------------------------

    def add_predictions(
        self, records: Iterable[PredictionRecord], answers: Iterable[ShadowAnswer] = ()
    ) -> int:
        """Write a batch of predictions, and the challenger's answers for some of them, in one
        transaction; returns how many predictions."""
        rows = [self._insert.parameters(record) for record in records]
        shadow = [self._shadow_insert.parameters(answer) for answer in answers]
        if rows or shadow:
            with self.engine.begin() as connection:
                if rows:
                    connection.exec_driver_sql(self._insert.sql, rows)
                if shadow:
                    connection.exec_driver_sql(self._shadow_insert.sql, shadow)
        return len(rows)

    def prune(self, max_rows: int, max_age: timedelta, now: datetime | None = None) -> int:
        """Delete predictions older than `max_age` or beyond the newest `max_rows`, keeping
        those that received feedback, and the challenger's answers whose prediction is gone;
        returns how many predictions went."""
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
            # Through the answers' own time index: an answer is written just after its
            # prediction, so one left past the cutoff goes at a later prune.
            connection.execute(
                delete(shadow_answers).where(
                    shadow_answers.c.created_at < cutoff,
                    ~exists().where(predictions.c.id == shadow_answers.c.prediction_id),
                )
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
            pixels=decode_pixels([row.pixels for row in rows]),
            probabilities=decode_probabilities([row.probabilities for row in rows]),
            digits=np.array([row.digit for row in rows], dtype=np.int64),
            uncertain=np.array([row.uncertain for row in rows], dtype=bool),
            created_at=np.array(
                [row.created_at.replace(tzinfo=None) for row in rows], dtype="datetime64[us]"
            ),
            model_versions=np.array([row.model_version for row in rows], dtype=str),
            sources=np.array([row.source for row in rows], dtype=str),
        )

    # --- feedback --------------------------------------------------------------------------

    @functools.cached_property
    def client_key_secret(self) -> bytes:
        """The deployment's secret for clients' keys (made with the store: see migration 0003)."""
        query = select(secrets.c.value).where(secrets.c.name == CLIENT_KEY_SECRET)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one().encode()

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
                            input_hash=input_hash(row.pixels),
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

    def list_feedback(self, which: FeedbackFilter = ALL_FEEDBACK) -> list[FeedbackRow]:
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
            pixels=decode_pixels([pixels for _, pixels in first.values()]),
            labels=np.array(
                [label_code(label) for label, _ in first.values()],
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
