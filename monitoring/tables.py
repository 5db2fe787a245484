"""The prediction store's schema: three tables behind one SQLAlchemy URL (a SQLite file by
default, PostgreSQL on the shared stack), and how a logged prediction's arrays are encoded.

Only the preprocessed 28×28 grey levels of a prediction are stored, never what was uploaded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, get_args

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    TypeDecorator,
)

from mnist_core.labels import NUM_CLASSES

SIDE = 28
Source = Literal["canvas", "upload", "pixels", "batch"]
Status = Literal["pending", "accepted", "rejected"]
SOURCES: tuple[str, ...] = get_args(Source)
STATUSES: tuple[str, ...] = get_args(Status)
# A prediction's class probabilities are stored as little-endian float32, like its grey levels
# as bytes: 40 bytes a row, and no JSON to encode on the writer's path.
PROBABILITY_DTYPE = np.dtype("<f4")


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
    Column("id", String(32), primary_key=True),  # a UUIDv7 in hex: `new_prediction_id`
    Column("created_at", UtcDateTime, nullable=False, index=True),
    # Not indexed: the queries by version read the newest rows through `created_at`'s index,
    # and each index costs every logged prediction an update.
    Column("model_version", String(80), nullable=False),
    Column("source", String(16), nullable=False),
    Column("pixels", LargeBinary(SIDE * SIDE), nullable=False),  # the preprocessed 28×28 uint8
    Column("digit", SmallInteger, nullable=False),
    # (10,) float32, little-endian: see `encode_probabilities`
    Column("probabilities", LargeBinary(NUM_CLASSES * PROBABILITY_DTYPE.itemsize), nullable=False),
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


def encode_pixels(pixels: np.ndarray) -> bytes:
    if pixels.shape != (SIDE, SIDE) or pixels.dtype != np.uint8:
        raise ValueError(
            f"a logged input is a 28×28 uint8 array, not {pixels.shape} {pixels.dtype}"
        )
    return pixels.tobytes()


def decode_pixels(rows: list[bytes]) -> np.ndarray:
    """(N, 28, 28) uint8 from N stored inputs."""
    return np.frombuffer(b"".join(rows), np.uint8).reshape(-1, SIDE, SIDE)


def encode_probabilities(probabilities: np.ndarray | list[float]) -> bytes:
    encoded = np.asarray(probabilities, PROBABILITY_DTYPE)
    if encoded.shape != (NUM_CLASSES,):
        raise ValueError(f"a logged answer has {NUM_CLASSES} probabilities, not {encoded.shape}")
    return encoded.tobytes()


def decode_probabilities(rows: list[bytes]) -> np.ndarray:
    """(N, 10) float32 from N stored answers."""
    decoded = np.frombuffer(b"".join(rows), PROBABILITY_DTYPE).reshape(-1, NUM_CLASSES)
    return decoded.astype(np.float32)
