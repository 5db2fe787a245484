"""The API's defaults: worker count, the local store it refuses to invent, MLflow's limits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving import settings as serving_settings
from serving.app import create_app
from serving.settings import MAX_DEFAULT_WORKERS, ServingSettings
from tests.conftest import PROJECT_ROOT


@pytest.mark.parametrize(("cores", "workers"), [(None, 1), (1, 1), (2, 2), (64, 4)])
def test_workers_default_to_one_per_core_up_to_a_few(
    cores: int | None, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MNIST_WORKERS", raising=False)
    monkeypatch.setattr(serving_settings.os, "cpu_count", lambda: cores)
    assert ServingSettings().workers == workers <= MAX_DEFAULT_WORKERS
    monkeypatch.setenv("MNIST_WORKERS", "3")
    assert ServingSettings().workers == 3  # the environment still decides


def test_a_missing_sqlite_store_is_refused_with_a_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = ServingSettings(MLFLOW_TRACKING_URI="sqlite:///mlflow.db")
    with pytest.raises(FileNotFoundError, match="start from the project root"):
        create_app(settings)
    assert not (tmp_path / "mlflow.db").exists()  # no empty store was made
    (tmp_path / "mlflow.db").touch()
    assert settings.missing_local_store() is None
    remote = ServingSettings(MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert remote.missing_local_store() is None


def test_python_m_serving_outside_the_project_says_where_its_store_should_be(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MNIST_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"names {tmp_path / 'mlflow.db'}, which does not exist" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_mlflow_http_limits_come_from_the_settings() -> None:
    limits = ServingSettings(MNIST_REGISTRY_RETRIES=1, MNIST_REGISTRY_TIMEOUT_SECONDS=3)
    assert limits.registry_limits() == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
