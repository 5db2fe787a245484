"""The served model: loaded from the registry alias, swapped in place when the alias moves."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import mlflow
import torch
from mlflow.tracking import MlflowClient

from pipeline.model import predict_proba
from serving.settings import ServingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    name: str
    alias: str
    version: str
    run_id: str
    model: torch.nn.Module = field(repr=False)
    loaded_at: float = field(default_factory=time.time)

    def predict(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, 10) for uint8 MNIST-style images (N, 28, 28)."""
        return predict_proba(self.model, pixels)


class ModelStore:
    """Holds the version the alias points to. Readers take `current` once per request, so a swap
    never changes the model under a request in flight."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.current: ServedModel | None = None
        self.last_error: str | None = "the model has not been loaded yet"
        self._client = MlflowClient(tracking_uri=settings.tracking_uri)

    def _load(self, version: str, run_id: str) -> ServedModel:
        uri = f"models:/{self.settings.model_name}/{version}"
        mlflow.set_tracking_uri(self.settings.tracking_uri)
        model = mlflow.pytorch.load_model(uri, map_location="cpu").eval()
        return ServedModel(
            self.settings.model_name, self.settings.model_alias, version, run_id, model
        )

    def refresh(self) -> bool:
        """Load the aliased version if it is not the one being served; True when it changed."""
        name, alias = self.settings.model_name, self.settings.model_alias
        try:
            target = self._client.get_model_version_by_alias(name, alias)
            version = str(target.version)
            if self.current is not None and self.current.version == version:
                return False
            served = self._load(version, target.run_id)
        except Exception as error:  # the registry may be down or empty: keep serving what we have
            self.last_error = (
                f"cannot load models:/{name}@{alias} from {self.settings.tracking_uri}: {error}"
            )
            log.warning(self.last_error)
            return False
        previous = self.current.version if self.current else None
        self.current, self.last_error = served, None
        log.info("Serving %s version %s (was %s)", name, version, previous)
        return True

    async def poll(self) -> None:
        """Follow the alias forever, checking every `poll_interval_seconds`."""
        while True:
            await asyncio.sleep(self.settings.poll_interval_seconds)
            await asyncio.to_thread(self.refresh)
