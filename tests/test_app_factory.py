"""`create_app` is pure: settings in, app out. Two apps in one process keep their own limits and
counts, and building and running them changes nothing process-wide (the server's entry point,
`serving.process`, tunes the process instead)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
from starlette.formparsers import MultiPartParser

from serving import process
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, ready_client

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()  # 6.5 KB


def test_two_apps_in_one_process_do_not_interfere(
    trained_registry: dict[str, str], tmp_path: Path
) -> None:
    environment, spool = dict(os.environ), MultiPartParser.spool_max_size
    frozen = gc.get_freeze_count()
    strict = ServingSettings(**trained_registry, MNIST_MAX_UPLOAD_BYTES=4096,
                             MNIST_MAX_BATCH_FILES=64, MNIST_REGISTRY_RETRIES=0,
                             MNIST_STORE_URL=f"sqlite:///{tmp_path / 'a.db'}")  # fmt: skip
    lenient = ServingSettings(**trained_registry, MNIST_STORE_URL=f"sqlite:///{tmp_path / 'b.db'}")
    with ready_client(create_app(strict)) as first, ready_client(create_app(lenient)) as second:
        refused = first.post("/predict", files={"file": ("7.png", SEVEN, "image/png")})
        answered = second.post("/predict", files={"file": ("7.png", SEVEN, "image/png")})
        counts = [client.get("/metrics").text for client in (first, second)]
    assert refused.status_code == 413 and "4 KB" in refused.json()["detail"]
    assert answered.status_code == 200
    assert 'mnist_http_requests_total{method="POST",route="/predict",status="413"} 1.0' in counts[0]
    assert 'route="/predict",status="200"' not in counts[0]
    assert 'mnist_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in counts[1]
    assert dict(os.environ) == environment
    assert MultiPartParser.spool_max_size == spool
    assert gc.get_freeze_count() == frozen


def test_the_entry_point_tunes_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServingSettings(MNIST_REGISTRY_RETRIES=1, MNIST_MAX_BATCH_FILES=64)
    for name in settings.registry_limits():
        monkeypatch.setenv(name, "")  # restored after the test
    monkeypatch.setattr(MultiPartParser, "spool_max_size", MultiPartParser.spool_max_size)
    process.tune(settings)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert MultiPartParser.spool_max_size >= 64 * settings.max_upload_bytes
