"""What goes into the prediction store and what comes out of it, as plain immutable values."""

from __future__ import annotations

import hashlib
import os
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the tables import SQLAlchemy: the API loads it only once it listens
    from monitoring.tables import Source, Status


class UnknownPrediction(LookupError):
    """No logged prediction has this id (never logged, or pruned)."""


class AlreadyAnswered(Exception):
    """This prediction has feedback already."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def input_hash(pixels: np.ndarray | bytes) -> str:
    """The identity of a 28×28 input (its grey levels, or those as the store keeps them: 784
    bytes): equal grey levels, equal hash (de-duplication, and the side of the train/held-out
    split it lands on)."""
    if not isinstance(pixels, bytes):
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return hashlib.sha256(pixels).hexdigest()


def new_prediction_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: the time in milliseconds first, then 74 random
    bits (unguessable, as feedback needs). Time-ordered ids are added at the end of the primary
    key's index; random ones (uuid4) land all over it, which made each logged row cost a
    200,000-row SQLite log three times the CPU and write two and a half times the bytes.
    (This layout on every Python: 3.14's `uuid.uuid7` may fill part of the random field with a
    counter, which RFC 9562 allows, and the ids must stay unguessable.)"""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant: RFC 9562
    return f"{value:032x}"


def prediction_time(prediction_id: str) -> datetime | None:
    """When an id of `new_prediction_id` was made (its first 48 bits: Unix milliseconds), or
    None for what is not 32 hex digits or names no possible time."""
    if len(prediction_id) != 32 or not all(c in string.hexdigits for c in prediction_id):
        return None
    try:
        return datetime.fromtimestamp(int(prediction_id[:12], 16) / 1000, UTC)
    except (OverflowError, ValueError, OSError):  # past the year 9999
        return None


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One logged prediction, as the API hands it to the log writer (checked and encoded by the
    writer, off the request path)."""

    id: str
    model_version: str
    source: Source
    pixels: np.ndarray  # (28, 28) uint8
    digit: int
    probabilities: Sequence[float] | np.ndarray  # (10,)
    uncertain: bool
    created_at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class ShadowAnswer:
    """The challenger's answer for one logged prediction (`serving.shadow`), written beside it."""

    prediction_id: str
    challenger_version: str
    digit: int
    confidence: float
    uncertain: bool
    created_at: datetime = field(default_factory=utc_now)


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


ALL_FEEDBACK = FeedbackFilter()


@dataclass(frozen=True)
class StoredFeedback:
    """What `Store.add_feedback` recorded: the answer and the prediction it corrects."""

    prediction_id: str
    label: str
    predicted: int
    model_version: str
