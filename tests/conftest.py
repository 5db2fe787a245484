"""Shared fixtures: tiny synthetic MNIST, tiny parameters, a private MLflow store per test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.synthetic import write_mnist_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEED_IMAGES = PROJECT_ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def raw_mnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A directory with the four raw IDX files of a tiny synthetic MNIST, and their checksums."""
    directory = tmp_path_factory.mktemp("raw-mnist")
    return directory, write_mnist_dir(directory)


def tiny_params(raw_dir: Path, checksums: dict[str, str]) -> dict:
    """The project's params.yaml shrunk for tests: local source only, small net, one epoch."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["download"].update(local_dir=str(raw_dir), mirrors=[], npm_package=None, files=checksums)
    params["preprocess"]["val_size"] = 50
    params["train"].update(epochs=2, batch_size=32, channels=[8, 16, 16], hidden_units=32)
    params["evaluate"]["seed_images_dir"] = str(SEED_IMAGES)
    params["register"].update(min_test_accuracy=0.0, min_seed_accuracy=0.0)
    return params


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with a private SQLite MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MNIST_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return tmp_path


@pytest.fixture
def params_file(workdir: Path, raw_mnist: tuple[Path, dict[str, str]]) -> Path:
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(*raw_mnist)))
    return path
