"""The same code against a real `mlflow server` (on loopback, SQLite behind it), chosen by
MLFLOW_TRACKING_URI. `test_postgres_stack.py` does it with PostgreSQL and two API processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, mlflow_server, ready_client, run_pipeline, tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{root / 'server.db'}", root) as url:
        yield url


def test_pipeline_and_api_against_a_tracking_server(
    tracking_server: str, workdir: Path, raw_mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    params_file = workdir / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params(*raw_mnist)))
    run_pipeline(params_file)

    client = MlflowClient(tracking_server)
    version = client.get_model_version_by_alias("mnist-cnn", "production")
    run = client.get_run(version.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # stored by the server
    assert not (workdir / "mlartifacts").exists() and not (workdir / "mlflow.db").exists()

    with ready_client(create_app(ServingSettings(MLFLOW_TRACKING_URI=tracking_server))) as api:
        assert api.get("/ready").status_code == 200
        seven = (SEED_IMAGES / "num_7.png").read_bytes()
        response = api.post("/predict", files={"file": ("7.png", seven, "image/png")})
        assert response.json()["model_version"] == str(version.version)
