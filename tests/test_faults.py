"""Faults the API survives: a registry that is down at start, a version that cannot be loaded,
an alias that is deleted. Each test works on its own copy of the tiny registry."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import uvicorn
from mlflow.tracking import MlflowClient

from bench.loadgen import free_port
from pipeline.registry.aliases import promote
from serving import process
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, mlflow_server, ready_client

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()


def eventually(check: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def register_corrupt_version(settings: ServingSettings, tmp_path: Path) -> str:
    """A new version whose ONNX file is garbage (a failed upload, a disk error)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    model_dir = tmp_path / "corrupt-model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("flavors:\n  onnx:\n    data: model.onnx\n")
    (model_dir / "model.onnx").write_bytes(b"not an onnx model")
    client = MlflowClient(settings.tracking_uri)
    return str(client.create_model_version(settings.model_name, model_dir.as_uri()).version)


def test_unloadable_version_keeps_the_previous_one_serving_and_backs_off(
    registry_copy: dict[str, str], tmp_path: Path
) -> None:
    settings = ServingSettings(**registry_copy, MNIST_POLL_SECONDS=0.05)
    registry = MlflowClient(settings.tracking_uri)
    good = str(registry.get_model_version_by_alias(settings.model_name, "production").version)
    with ready_client(create_app(settings)) as client:
        store = client.app.state.service.store
        attempts: list[str] = []
        polls: list[bool] = []
        real_load, real_refresh = store._load, store.refresh
        store._load = lambda version: (attempts.append(version), real_load(version))[1]
        store.refresh = lambda: polls.append(True) or real_refresh()
        bad = register_corrupt_version(settings, tmp_path)
        promote(registry, settings, bad)
        assert eventually(lambda: client.get("/model").json()["alias_version"] == bad)
        seen = len(polls)
        assert eventually(lambda: len(polls) >= seen + 20, seconds=120)
        info = client.get("/model").json()
        assert info["version"] == good and "could not be loaded" in info["problem"]
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["model_version"] == good
        assert f"version {bad}" in ready.json()["reason"]
        assert (
            client.post("/predict", files={"file": ("7.png", SEVEN)}).json()["model_version"]
            == good
        )
        # Without backoff every poll would try again; with it, the tries are 0.1, 0.2, 0.4… s
        # apart (a slow machine's slower polls allow a few more, never one per poll).
        assert 1 <= len(attempts) <= (len(polls) - seen) // 2, (attempts, len(polls) - seen)
        promote(registry, settings, good)
        assert eventually(lambda: client.get("/model").json()["problem"] is None)


def test_deleted_alias_keeps_serving_and_says_so(registry_copy: dict[str, str]) -> None:
    settings = ServingSettings(**registry_copy, MNIST_POLL_SECONDS=0.05)
    registry = MlflowClient(settings.tracking_uri)
    with ready_client(create_app(settings)) as client:
        version = client.get("/model").json()["version"]
        registry.delete_registered_model_alias(settings.model_name, "production")
        assert eventually(lambda: client.get("/model").json()["alias_version"] is None)
        ready = client.get("/ready")
        assert ready.status_code == 200 and "holds the alias 'production'" in ready.json()["reason"]
        response = client.post("/predict", files={"file": ("7.png", SEVEN)})
        assert response.status_code == 200 and response.json()["model_version"] == version


@pytest.mark.slow
def test_registry_down_at_start_then_up_without_restart(
    registry_copy: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = ServingSettings(MLFLOW_TRACKING_URI=url, MNIST_POLL_SECONDS=0.2)
    for name in settings.registry_limits():  # restored after the test
        monkeypatch.setenv(name, "")
    process.tune(settings)  # MLflow's bounded retries, as each worker of `python -m serving`
    with ready_client(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        assert eventually(
            lambda: client.get("/ready").json()["reason"] == "the model registry cannot be reached"
        )
        assert client.get("/ready").status_code == 503
        with mlflow_server(registry_copy["MLFLOW_TRACKING_URI"], tmp_path, port):
            assert eventually(lambda: client.get("/ready").status_code == 200, seconds=30)
            response = client.post("/predict", files={"file": ("7.png", SEVEN)})
            assert response.status_code == 200


@contextlib.contextmanager
def silent_host() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@contextlib.contextmanager
def dead_host() -> Iterator[str]:
    yield f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.parametrize("registry", [dead_host, silent_host])
def test_health_answers_at_once_whatever_the_registry_does(
    registry: Callable[[], contextlib.AbstractContextManager[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With MLflow's own retry settings (none set here), a registry that is down or never
    answers delays nothing: the socket is open and `/health` is 200 within 2 s of start."""
    for name in list(os.environ):
        if name.startswith("MLFLOW_HTTP_REQUEST_"):
            monkeypatch.delenv(name)
    with registry() as url:
        settings = ServingSettings(MLFLOW_TRACKING_URI=url)
        for name in settings.registry_limits():  # restored after the test
            monkeypatch.setenv(name, "")
        process.tune(settings)  # as each worker of `python -m serving` does
        port = free_port()
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        started = time.monotonic()
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            health = None
            while time.monotonic() - started < 2 and health is None:
                with contextlib.suppress(OSError):
                    health = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            assert health is not None and health.status == 200
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2)
            ready = json.loads(refused.value.read())
            assert refused.value.code == 503 and ready["ready"] is False
            assert ready["reason"] in (
                "the model has not been loaded yet",
                "the model registry cannot be reached",
            )
            # MLflow was bounded by the API's settings, not left at its own defaults.
            assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
            assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
        finally:
            server.should_exit = True
            thread.join(timeout=15)
        assert not thread.is_alive()  # the shutdown did not wait for the registry
