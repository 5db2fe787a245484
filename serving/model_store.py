"""The served model: loaded from the registry alias as ONNX, swapped when the alias moves; or,
with `MNIST_MODEL_PATH`, one local model file loaded once (a model baked into an image).

MLflow and ONNX Runtime (seconds of imports) are imported by the first load, on the store's own
thread, so that the server's socket listens and `/health` answers before they are.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from serving.settings import ServingSettings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from mnist_core.classifier import DigitClassifier

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 300.0


class ModelFormatError(RuntimeError):
    """A registered version this server cannot load (not an ONNX model)."""


@dataclass(frozen=True)
class ServedModel:
    """One registered version (or the local model file), immutable: a request keeps the snapshot
    it started with."""

    name: str
    alias: str | None  # None: a local file, no registry
    version: str
    run_id: str | None
    source: str  # the registry URI or the local path it was loaded from
    classifier: DigitClassifier = field(repr=False)
    loaded_at: float = field(default_factory=time.time)

    def uncertain_below(self, override: float | None = None) -> float:
        """The `uncertain` threshold: `override` (the environment's) if set, else the model's."""
        return self.classifier.metadata.uncertain_below if override is None else override


def _onnx_flavor_file(directory: Path, mlmodel: dict, described_as: str) -> Path:
    """The ONNX file of an MLflow model directory, named by its MLmodel's `onnx` flavor."""
    flavor = mlmodel.get("flavors", {}).get("onnx")
    if flavor is None:
        raise ModelFormatError(
            f"{described_as} has no ONNX flavor (it was logged by older training code); "
            "retrain it with `dvc repro` or promote an ONNX version"
        )
    return directory / flavor["data"]


def read_onnx_model(name: str, version: str, tracking_uri: str) -> bytes:
    """The ONNX file (the `onnx` flavor) of a registered model version, read into memory."""
    # The version's own artifact location, asked of this registry: a `models:/` URI would be
    # resolved by MLflow against the process's global registry, whatever `registry_uri` says.
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    model_uri = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory(prefix="mnist-model-") as directory:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=directory, tracking_uri=tracking_uri
            )
        )
        # The MLmodel file read as YAML: `mlflow.models` would import pandas, which the API's
        # MLflow client (mlflow-skinny) does without.
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        return _onnx_flavor_file(local, mlmodel, f"{name} version {version}").read_bytes()


def read_local_model(path: Path) -> tuple[bytes, str | None]:
    """An ONNX file, or the ONNX file of an MLflow model directory (as `mlflow artifacts
    download` writes it) with the training run its MLmodel names."""
    if not path.is_dir():
        return path.read_bytes(), None
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    return _onnx_flavor_file(path, mlmodel, str(path)).read_bytes(), mlmodel.get("run_id")


class ModelStore:
    """Holds the version the alias points to. Readers take `current` once per request, so a swap
    never changes the model under a request in flight.

    What goes wrong is kept as `problem`, a sentence safe to show to any client (no tracking URI,
    no exception text: those go to the log). A version that fails to load is retried with an
    exponential backoff while the previous version goes on serving. When the alias is deleted,
    the loaded version goes on serving and `problem` says so.

    With `model_path` set, that file is loaded by the first `refresh` and served for good: the
    registry is never contacted, and a file that cannot be loaded stops the start.

    `alias` (default: the serving alias) names another alias to follow. An `optional` one (the
    challenger's) may be absent: then nothing is loaded, and `current` becomes None when the
    alias goes away, without a warning at every check.
    """

    def __init__(
        self, settings: ServingSettings, alias: str | None = None, optional: bool = False
    ) -> None:
        self.settings = settings
        self.alias = alias or settings.model_alias
        self.optional = optional
        self.current: ServedModel | None = None
        self.alias_version: str | None = None  # where the alias pointed at the last check
        self.problem: str | None = "the model has not been loaded yet"
        self._failed: tuple[str, int, float] | None = None  # version, failures, retry after
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        # Set once the first load has been tried, whatever came of it (tools and tests wait
        # on it: the app answers before the model is loaded).
        self.checked = threading.Event()

    @functools.cached_property
    def _client(self) -> MlflowClient:
        # The registry is the tracking store: named, so a process-wide default cannot override it.
        from mlflow.tracking import MlflowClient

        from monitoring.alembic_lock import ALEMBIC

        uri = self.settings.tracking_uri
        with ALEMBIC:  # a database registry is opened, and migrated if new, with Alembic
            return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def _classifier(self, onnx_model: bytes) -> DigitClassifier:
        from mnist_core.classifier import DigitClassifier, default_threads

        threads = self.settings.inference_threads or default_threads(self.settings.workers)
        return DigitClassifier(onnx_model, threads=threads)

    def _load(self, version: str) -> ServedModel:
        name = self.settings.model_name
        run_id = self._client.get_model_version(name, version).run_id
        onnx_model = read_onnx_model(name, version, self.settings.tracking_uri)
        classifier = self._classifier(onnx_model)
        uri = f"models:/{name}/{version}"
        return ServedModel(name, self.alias, version, run_id, uri, classifier)

    def _load_file(self, path: Path) -> bool:
        try:
            onnx_model, run_id = read_local_model(path)
            classifier = self._classifier(onnx_model)
        except Exception as error:  # missing, unreadable, not ONNX: nothing to serve
            raise ModelFormatError(
                f"MNIST_MODEL_PATH={path} is not a loadable ONNX file or MLflow model directory "
                f"with an ONNX flavor ({type(error).__name__}: {error})"
            ) from error
        # A file has no registry version: its content's digest names what made a prediction.
        version = "sha256:" + hashlib.sha256(onnx_model).hexdigest()[:12]
        self.current = ServedModel(path.name, None, version, run_id, str(path), classifier)
        self.problem = None
        log.info("Serving the model file %s (%s)", path, version)
        return True

    def _serving_note(self) -> str:
        return f"; still serving version {self.current.version}" if self.current else ""

    def _backing_off(self, version: str) -> bool:
        return (
            self._failed is not None
            and self._failed[0] == version
            and time.monotonic() < self._failed[2]
        )

    def refresh(self) -> bool:
        """Load the aliased version if it is not the one being served; True when it changed."""
        try:
            return self._refresh()
        finally:
            self.checked.set()

    def _refresh(self) -> bool:
        from mlflow.exceptions import MlflowException

        if self.settings.model_path is not None:
            return self.current is None and self._load_file(self.settings.model_path)
        name, alias = self.settings.model_name, self.alias
        try:
            # The registered model's aliases: a missing alias is then told by the registry's
            # error code or by its absence, never by an error message's wording.
            aliased = self._client.get_registered_model(name).aliases.get(alias)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                return self._fail_to_reach(error)
            aliased = None
        except Exception as error:  # network errors, a server that is down or half up
            return self._fail_to_reach(error)
        if aliased is None:
            self.alias_version = None
            if self.optional:
                return self._drop_optional(name, alias)
            self.problem = f"no version of {name} holds the alias '{alias}'{self._serving_note()}"
            log.warning("%s", self.problem)
            return False
        version = str(aliased)
        self.alias_version = version
        if self.current is not None and self.current.version == version:
            self.problem, self._failed = None, None
            return False
        if self._backing_off(version):
            return False
        try:
            served = self._load(version)
        except Exception as error:  # a missing, corrupt or non-ONNX artifact
            failures = self._failed[1] + 1 if self._failed and self._failed[0] == version else 1
            delay = min(self.settings.poll_interval_seconds * 2**failures, MAX_RETRY_SECONDS)
            self._failed = (version, failures, time.monotonic() + delay)
            self.problem = (
                f"version {version} of {name} could not be loaded (its model is missing, "
                f"corrupt or not ONNX){self._serving_note()}; retrying in {delay:.0f} s"
            )
            log.warning("%s: %s", self.problem, error)
            return False
        previous = self.current.version if self.current else None
        self.current, self.problem, self._failed = served, None, None
        log.info("Serving %s version %s as '%s' (was %s)", name, version, alias, previous)
        return True

    def _drop_optional(self, name: str, alias: str) -> bool:
        """An optional alias that no version holds: nothing to load, and what was loaded goes."""
        self.problem, self._failed = f"no version of {name} holds the alias '{alias}'", None
        if self.current is None:
            return False
        log.info("%s any more: version %s is unloaded", self.problem, self.current.version)
        self.current = None
        return True

    def _fail_to_reach(self, error: Exception) -> bool:
        self.problem = f"the model registry cannot be reached{self._serving_note()}"
        log.warning("%s (%s): %s", self.problem, self.settings.tracking_uri, error)
        return False

    async def poll(self) -> None:
        """Load the aliased version, then follow the alias forever, checking it every
        `poll_interval_seconds` (a local model file is loaded at start, not followed).

        Registry requests run on the store's own thread, so that the app answers meanwhile
        and its shutdown never waits for a registry that does not answer (see `close`)."""
        loop = asyncio.get_running_loop()
        while self.settings.model_path is None:
            await loop.run_in_executor(self._executor, self.refresh)
            await asyncio.sleep(self.settings.poll_interval_seconds)

    def close(self) -> None:
        """Stop following: a registry request in flight is left to end on its own (within the
        MLflow limits of `ServingSettings.registry_limits`)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
