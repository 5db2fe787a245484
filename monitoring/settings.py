"""Where the prediction log lives and how much of it is kept (one pydantic-settings object)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

STORE_FILE = "predictions.db"


def project_root() -> Path:
    """The checkout this package runs from, or the working directory for an installed copy
    (a site-packages directory is no place for a database)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def default_store_url() -> str:
    return f"sqlite:///{project_root() / STORE_FILE}"


class MonitoringSettings(BaseSettings):
    """The store of predictions, feedback and drift checks, and the prediction log's limits."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    # A SQLAlchemy URL: a SQLite file by default, `postgresql+psycopg://…` on the shared stack.
    store_url: str = Field(default_factory=default_store_url, validation_alias="MNIST_STORE_URL")
    prediction_log: bool = Field(default=True, validation_alias="MNIST_PREDICTION_LOG")
    # The share of predictions logged (1: all); feedback works only on logged ones.
    log_sample_rate: float = Field(
        default=1.0, ge=0, le=1, validation_alias="MNIST_LOG_SAMPLE_RATE"
    )
    # Predictions waiting to be written; past it, new ones are dropped (and counted).
    log_queue_size: int = Field(default=10_000, gt=0, validation_alias="MNIST_LOG_QUEUE_SIZE")
    log_batch_size: int = Field(default=500, gt=0, validation_alias="MNIST_LOG_BATCH_SIZE")
    # How long the writer gathers predictions before it writes them in one transaction.
    log_flush_seconds: float = Field(
        default=1.0, gt=0, le=60, validation_alias="MNIST_LOG_FLUSH_SECONDS"
    )
    # Retention, pruned by the writer: rows beyond the newest `retention_rows`, and rows older
    # than `retention_days`, go, except those that received feedback.
    retention_rows: int = Field(default=1_000_000, gt=0, validation_alias="MNIST_RETENTION_ROWS")
    retention_days: float = Field(default=90, gt=0, validation_alias="MNIST_RETENTION_DAYS")
    # Feedback one client (keyed by a hash of its address) may send per hour.
    feedback_per_hour: int = Field(default=120, gt=0, validation_alias="MNIST_FEEDBACK_PER_HOUR")
