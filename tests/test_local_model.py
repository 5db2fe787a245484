"""MNIST_MODEL_PATH: the API serves a local model file (as baked into an image) without ever
contacting a registry, and refuses to start on a file it cannot load."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from serving.app import create_app
from serving.model_store import ModelFormatError, ModelStore, read_onnx_model
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, download_production

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()


def local_settings(model_path: Path, tmp_path: Path) -> ServingSettings:
    """Settings that serve `model_path`, with a registry URI that must not be touched."""
    registry = tmp_path / "no-registry" / "mlflow.db"  # its directory does not exist
    return ServingSettings(
        MNIST_MODEL_PATH=str(model_path), MLFLOW_TRACKING_URI=f"sqlite:///{registry}"
    )


@pytest.fixture
def onnx_file(trained_registry: dict[str, str], tmp_path: Path) -> Path:
    uri = trained_registry["MLFLOW_TRACKING_URI"]
    path = tmp_path / "model.onnx"
    production = MlflowClient(uri).get_model_version_by_alias("mnist-cnn", "production")
    path.write_bytes(read_onnx_model("mnist-cnn", production.version, uri))
    return path


def test_onnx_file_is_served_without_a_registry(onnx_file: Path, tmp_path: Path) -> None:
    settings = local_settings(onnx_file, tmp_path)
    digest = "sha256:" + hashlib.sha256(onnx_file.read_bytes()).hexdigest()[:12]
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready").json()
        assert ready == {"ready": True, "model_version": digest, "reason": None}
        info = client.get("/model").json()
        assert (info["name"], info["alias"], info["version"]) == ("model.onnx", None, digest)
        assert (info["source"], info["run_id"], info["alias_version"]) == (
            str(onnx_file),
            None,
            None,
        )
        prediction = client.post("/predict", files={"file": ("7.png", SEVEN, "image/png")}).json()
        assert prediction["model_version"] == digest and prediction["digit"] in range(10)
        assert client.get("/metrics").status_code == 200
    assert not (tmp_path / "no-registry").exists()


def test_mlflow_model_directory_is_served_with_its_run(
    trained_registry: dict[str, str], tmp_path: Path
) -> None:
    uri = trained_registry["MLFLOW_TRACKING_URI"]
    production = MlflowClient(uri).get_model_version_by_alias("mnist-cnn", "production")
    directory = download_production(uri, tmp_path / "production")
    with TestClient(create_app(local_settings(directory, tmp_path))) as client:
        info = client.get("/model").json()
        assert (info["source"], info["run_id"]) == (str(directory), production.run_id)
        onnx_model = read_onnx_model("mnist-cnn", production.version, uri)
        assert info["version"] == "sha256:" + hashlib.sha256(onnx_model).hexdigest()[:12]


def test_local_model_is_not_polled(onnx_file: Path, tmp_path: Path) -> None:
    store = ModelStore(local_settings(onnx_file, tmp_path))
    assert store.refresh() is True and store.refresh() is False  # loaded once
    asyncio.run(asyncio.wait_for(store.poll(), timeout=1))  # returns at once: nothing to follow


@pytest.mark.parametrize("content", [None, b"not an onnx model"], ids=["missing", "not-onnx"])
def test_a_model_file_that_cannot_be_loaded_stops_the_start(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with (
        pytest.raises(ModelFormatError, match="MNIST_MODEL_PATH="),
        TestClient(create_app(local_settings(path, tmp_path))),
    ):
        pass


def test_empty_model_path_means_the_registry() -> None:
    assert ServingSettings(MNIST_MODEL_PATH="").model_path is None
