"""Serving configuration from the environment (one pydantic-settings object)."""

from __future__ import annotations

from pydantic import Field

from pipeline.settings import MlflowSettings


class ServingSettings(MlflowSettings):
    """Registry settings shared with the pipeline, plus the API's own limits."""

    poll_interval_seconds: float = Field(default=10.0, gt=0, validation_alias="MNIST_POLL_SECONDS")
    max_upload_bytes: int = Field(
        default=5 * 1024 * 1024, gt=0, validation_alias="MNIST_MAX_UPLOAD_BYTES"
    )
    # Decoded size limit, checked from the header before any pixel is decoded.
    max_image_pixels: int = Field(
        default=25_000_000, gt=0, validation_alias="MNIST_MAX_IMAGE_PIXELS"
    )
    max_batch_files: int = Field(default=16, gt=0, validation_alias="MNIST_MAX_BATCH_FILES")
    # Below this top-class probability a prediction is flagged `uncertain`.
    uncertain_below: float = Field(
        default=0.7, ge=0, le=1, validation_alias="MNIST_UNCERTAIN_BELOW"
    )
