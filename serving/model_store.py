"""The served model: loaded from the registry alias as ONNX, swapped when the alias moves."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from mnist_core.classifier import DigitClassifier, default_threads
from serving.settings import ServingSettings

log = logging.getLogger(__name__)


class ModelFormatError(RuntimeError):
    """A registered version this server cannot load (not an ONNX model)."""


@dataclass(frozen=True)
class ServedModel:
    """One registered version, immutable: a request keeps the snapshot it started with."""

    name: str
    alias: str
    version: str
    run_id: str
    classifier: DigitClassifier = field(repr=False)
    loaded_at: float = field(default_factory=time.time)


def read_onnx_model(model_uri: str, tracking_uri: str) -> bytes:
    """The ONNX file of a logged or registered model (its `onnx` flavor), read into memory."""
    with tempfile.TemporaryDirectory(prefix="mnist-model-") as directory:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=directory, tracking_uri=tracking_uri
            )
        )
        # The MLmodel file read as YAML: `mlflow.models` would import pandas, which the API's
        # MLflow client (mlflow-skinny) does without.
        flavor = yaml.safe_load((local / "MLmodel").read_text()).get("flavors", {}).get("onnx")
        if flavor is None:
            raise ModelFormatError(
                f"{model_uri} has no ONNX flavor (it was logged by older training code); "
                "retrain it with `dvc repro` or promote an ONNX version"
            )
        return (local / flavor["data"]).read_bytes()


class ModelStore:
    """Holds the version the alias points to. Readers take `current` once per request, so a swap
    never changes the model under a request in flight."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.current: ServedModel | None = None
        self.last_error: str | None = "the model has not been loaded yet"
        self._client = MlflowClient(tracking_uri=settings.tracking_uri)

    def _load(self, version: str, run_id: str) -> ServedModel:
        name = self.settings.model_name
        onnx_model = read_onnx_model(f"models:/{name}/{version}", self.settings.tracking_uri)
        threads = self.settings.inference_threads or default_threads(self.settings.workers)
        classifier = DigitClassifier(onnx_model, threads=threads)
        return ServedModel(name, self.settings.model_alias, version, run_id, classifier)

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
