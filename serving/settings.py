"""Serving configuration from the environment (one pydantic-settings object)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator

from mnist_core.settings import MlflowSettings
from monitoring.settings import MonitoringSettings

# Each worker holds its own model and MLflow client (about 235 MiB): past a few, more cores are
# better spent on ONNX Runtime's threads within each worker.
MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """One worker process per core, up to `MAX_DEFAULT_WORKERS`. On 2 cores, 2 workers served
    2.11× the throughput of `mlflow models serve` at 32 connections, 1 worker 1.27× (issue 14)."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


class ServingSettings(MlflowSettings, MonitoringSettings):
    """Registry settings shared with the pipeline, the prediction log's, and the API's own
    limits and tuning."""

    # A model file served instead of the registry's alias (an ONNX file, or an MLflow model
    # directory with an `onnx` flavor): loaded once at start, no registry, no polling.
    model_path: Path | None = Field(default=None, validation_alias="MNIST_MODEL_PATH")
    poll_interval_seconds: float = Field(default=10.0, gt=0, validation_alias="MNIST_POLL_SECONDS")
    max_upload_bytes: int = Field(
        default=5 * 1024 * 1024, gt=0, validation_alias="MNIST_MAX_UPLOAD_BYTES"
    )
    # Decoded size limit, checked from the header before any pixel is decoded.
    # (A JPEG counts at the reduced scale it is decoded at: see `decode.JPEG_DRAFT_SIDE`.)
    max_image_pixels: int = Field(
        default=10_000_000, gt=0, validation_alias="MNIST_MAX_IMAGE_PIXELS"
    )
    # Pixels per worker that may wait to be decoded at once; past it large pictures get 503.
    max_pending_pixels: int = Field(
        default=40_000_000, gt=0, validation_alias="MNIST_MAX_PENDING_PIXELS"
    )
    max_batch_files: int = Field(default=16, gt=0, validation_alias="MNIST_MAX_BATCH_FILES")
    # Below this top-class probability a prediction is flagged `uncertain`. Unset (the default),
    # each model version's own threshold applies: chosen on validation data at training and
    # carried in the ONNX file (see `mnist_core.classifier.ModelMetadata`).
    uncertain_below: float | None = Field(
        default=None, ge=0, le=1, validation_alias="MNIST_UNCERTAIN_BELOW"
    )

    # Origins allowed to call the API from a browser page served elsewhere, comma-separated
    # (`https://a.example,https://b.example`); empty, the default: no cross-origin calls.
    cors_origins: str = Field(default="", validation_alias="MNIST_CORS_ORIGINS")

    # Proxies in front of the API whose X-Forwarded-For header names the client (addresses or
    # networks, comma-separated; `*`: whoever connects, as behind Cloud Run's front end), so
    # that the feedback budget is per real client. Empty, the default: the header is ignored
    # and the socket's peer is the client.
    trusted_proxies: str = Field(default="", validation_alias="MNIST_TRUSTED_PROXIES")

    # Dynamic micro-batching: images of concurrent requests share one ONNX Runtime call of at
    # most `batch_max_size` images. A batch waits for company at most `batch_max_wait_ms`, and
    # only while other requests are still being decoded: a lone request never waits.
    batching: bool = Field(default=True, validation_alias="MNIST_BATCHING")
    batch_max_size: int = Field(default=32, gt=0, validation_alias="MNIST_BATCH_MAX_SIZE")
    batch_max_wait_ms: float = Field(default=2.0, ge=0, validation_alias="MNIST_BATCH_MAX_WAIT_MS")
    # The API's own bounds on its MLflow client (MLflow's defaults, 7 retries with a growing
    # backoff and 120 s per request, keep one registry check going for minutes). MLflow reads
    # them from the environment at every request: the app sets them for its process.
    registry_max_retries: int = Field(default=2, ge=0, validation_alias="MNIST_REGISTRY_RETRIES")
    registry_timeout_seconds: int = Field(
        default=10, gt=0, validation_alias="MNIST_REGISTRY_TIMEOUT_SECONDS"
    )
    # A request waits at most this long for the micro-batcher (503 after it), and at most
    # `batch_queue_limit` requests wait in its queue (503 with `Retry-After` past it).
    request_deadline_seconds: float = Field(
        default=10.0, gt=0, validation_alias="MNIST_REQUEST_DEADLINE_SECONDS"
    )
    batch_queue_limit: int = Field(default=1024, gt=0, validation_alias="MNIST_BATCH_QUEUE_LIMIT")
    # Shadow scoring (`serving.shadow`): the share of answered requests that the version holding
    # the challenger alias (`MNIST_CHALLENGER_ALIAS`) also scores, off the request path (0: the
    # challenger is not even loaded), and how many may wait for it (past it, dropped and counted).
    # Half by default: every answer cost 12.7 % of req/s for 28×28 PNGs at c=32 on 2 cores, half
    # of them 7.8 % (bench/README.md), within the 10 % a shadow may take of production.
    shadow_sample_rate: float = Field(
        default=0.5, ge=0, le=1, validation_alias="MNIST_SHADOW_SAMPLE_RATE"
    )
    shadow_queue_size: int = Field(default=1000, gt=0, validation_alias="MNIST_SHADOW_QUEUE_SIZE")
    # Worker processes (`python -m serving --workers`), each with its own model and poller;
    # by default one per core, at most four (see `default_workers`).
    workers: int = Field(default_factory=default_workers, gt=0, validation_alias="MNIST_WORKERS")
    # ONNX Runtime intra-op threads per worker; 0: the machine's cores divided among the workers.
    inference_threads: int = Field(default=0, ge=0, validation_alias="MNIST_INFERENCE_THREADS")
    # Threads per worker that decode and preprocess uploads off the event loop.
    decode_threads: int = Field(default=4, gt=0, validation_alias="MNIST_DECODE_THREADS")
    # A request of PNGs holding at most this many pixels in all (the page's 280×280 canvas, a
    # batch of 28×28 digits) is decoded on the event loop instead: in well under a millisecond,
    # less than the hop to a thread and back (`serving.decode_pool`); 0: always on the threads.
    decode_inline_pixels: int = Field(
        default=100_000, ge=0, validation_alias="MNIST_DECODE_INLINE_PIXELS"
    )

    # The supervisor (`serving.workers`): more than `crash_loop_deaths` workers replaced within
    # `crash_loop_seconds` stop the server; SIGTERM lets requests in flight finish for at most
    # `graceful_seconds`.
    crash_loop_deaths: int = Field(default=5, ge=0, validation_alias="MNIST_CRASH_LOOP_DEATHS")
    crash_loop_seconds: float = Field(
        default=60.0, gt=0, validation_alias="MNIST_CRASH_LOOP_SECONDS"
    )
    graceful_seconds: int = Field(default=30, gt=0, validation_alias="MNIST_GRACEFUL_SECONDS")

    def registry_limits(self) -> dict[str, str]:
        """MLflow's environment variables that bound its HTTP retries and timeouts."""
        return {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.registry_max_retries),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.registry_timeout_seconds),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # waits of 1, 2, 4… s between retries
        }

    @field_validator("model_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return value or None  # `MNIST_MODEL_PATH=` (empty): the registry, as when unset
