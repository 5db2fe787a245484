"""Shared fixtures: tiny synthetic MNIST, tiny parameters, a private MLflow store per test."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import mlflow
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from bench.loadgen import free_port, wait_until_ready
from pipeline.stages import download, evaluate, non_digits, preprocess, register, train
from tests.synthetic import write_mnist_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEED_IMAGES = PROJECT_ROOT / "tests" / "data"
STAGES = (download, preprocess, non_digits, train, evaluate, register)


def api_env_names() -> set[str]:
    """The environment variables the API reads: its settings, and where `python -m serving`
    listens (MLflow's own MLFLOW_* variables come on top)."""
    from serving.settings import ServingSettings

    fields = ServingSettings.model_fields.values()
    return {field.validation_alias for field in fields} | {"HOST", "PORT"}


def production_uri(tracking_uri: str, name: str = "mnist-cnn") -> str:
    """Where the production version's model is stored, asked of this registry (MLflow resolves
    a `models:/` URI against the process's default registry instead)."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version_by_alias(name, "production").version
    return client.get_model_version_download_uri(name, version)


def download_production(tracking_uri: str, destination: Path) -> Path:
    """The production version's MLflow model directory, downloaded to `destination`."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=production_uri(tracking_uri), dst_path=scratch, tracking_uri=tracking_uri
        )
        Path(local).rename(destination)
    return destination


def project_env(root: Path) -> dict[str, str]:
    """The environment of a project copy at `root`: the venv's `python`/`dvc` first on PATH,
    its own MLflow store, a git identity, no run inherited from `mlflow run`."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        # The copy's own prediction and feedback store (none until the API writes one).
        "MNIST_STORE_URL": f"sqlite:///{root / 'predictions.db'}",
        "MNIST_ARTIFACT_ROOT": str(root / "mlartifacts"),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    # Nor the experiment an in-process stage chose: `mlflow.set_experiment` writes it into this
    # process's environment, and the copy's new store has no such experiment.
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    return env


def run_pipeline(params_file: Path, *overrides: str, stages: Sequence = STAGES) -> None:
    """Run every stage (or `stages`) in-process, in order, as `dvc repro` would, with `-S`
    overrides."""
    argv = ["--params", str(params_file)]
    for override in overrides:
        argv += ["-S", override]
    # The stages' `mlflow.set_experiment` exports MLFLOW_EXPERIMENT_ID: kept to this call, or
    # every later subprocess of the session would look for that experiment in its own store.
    before = os.environ.get("MLFLOW_EXPERIMENT_ID")
    try:
        for stage in stages:
            stage.main(argv)
    finally:
        if before is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = before


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, root: Path, port: int | None = None) -> Iterator[str]:
    """A real `mlflow server` on loopback (on `port`, else a free one), keeping runs and the
    registry in `backend_store_uri` and proxying artifacts into `root/artifacts`; yields its URL
    and stops it on exit. Its output goes to `root/server.log`."""
    port = port or free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
        "--port", str(port), "--backend-store-uri", backend_store_uri, "--serve-artifacts",
        "--artifacts-destination", str(root / "artifacts"), "--workers", "1",
    ]  # fmt: skip
    # MLflow's job runner (GenAI jobs, several more Python processes) is of no use here.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    url = f"http://127.0.0.1:{port}"
    with (root / "server.log").open("w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(f"{url}/health", server, timeout=120, log=root / "server.log")
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextlib.contextmanager
def ready_client(app: FastAPI) -> Iterator[TestClient]:
    """A test client of `app`, once its model store has tried its first load (the app answers
    `/health` before that, and loads the model in the background)."""
    with TestClient(app) as client:
        assert app.state.service.store.checked.wait(timeout=60), "the first load never ended"
        yield client


@pytest.fixture(scope="session", autouse=True)
def private_prediction_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every app a test starts (in process or as `python -m serving`) logs its predictions to a
    SQLite file of the session's, never to the checkout's `predictions.db`."""
    url = f"sqlite:///{tmp_path_factory.mktemp('prediction-store') / 'predictions.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_STORE_URL", url)
        yield url


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
    params["non_digits"].update(train_per_family=4, eval_per_family=3)
    # One process: the tests of the train stage as several processes ask for them.
    params["train"].update(
        epochs=2, batch_size=32, channels=[8, 16, 16], hidden_units=32, ema_decay=0.9, processes=1
    )
    params["evaluate"]["seed_images_dir"] = str(SEED_IMAGES)
    params["register"].update(
        min_test_accuracy=0.0,
        min_seed_accuracy=0.0,
        min_real_pictures_accuracy=0.0,
        min_held_out_non_digits_flagged=0.0,
    )
    return params


def store_env(root: Path) -> dict[str, str]:
    """The environment of a private SQLite MLflow store in `root` (its artifacts beside it)."""
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MNIST_ARTIFACT_ROOT": str(root / "mlartifacts"),
    }


def work_in(patch: pytest.MonkeyPatch, root: Path) -> None:
    """Run in `root`, with its private MLflow store, as the stages run in a project folder."""
    patch.chdir(root)
    for name, value in store_env(root).items():
        patch.setenv(name, value)
    patch.delenv("MLFLOW_RUN_ID", raising=False)
    # MLflow's process-wide URI, which the stages set too: else MLflow's own functions (model
    # URIs, artifact downloads) would still ask the store an earlier test pointed it at.
    mlflow.set_tracking_uri(store_env(root)["MLFLOW_TRACKING_URI"])


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with a private SQLite MLflow store."""
    work_in(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture
def params_file(workdir: Path, raw_mnist: tuple[Path, dict[str, str]]) -> Path:
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(*raw_mnist)))
    return path


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory, raw_mnist) -> Path:
    """A project folder where the real stages ran once on the tiny params: every stage's
    outputs, and a private MLflow store (`mlflow.db`, `mlartifacts/`) whose `production` alias
    holds the tiny model. Shared by the whole session: read it, or change a `pipeline_copy`."""
    root = tmp_path_factory.mktemp("tiny-pipeline")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(*raw_mnist)))
    with pytest.MonkeyPatch.context() as patch:
        work_in(patch, root)
        run_pipeline(root / "params.yaml")
    return root


def relocate_store(database: Path, old: Path, new: Path) -> None:
    """Point a copied SQLite MLflow store at its copied artifacts: every path under `old` that
    its rows name (artifact locations, model sources, in every table) moves under `new`."""
    before, after = f"{old}{os.sep}", f"{new}{os.sep}"
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        for (table,) in tables.fetchall():
            for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                name = column[1]
                connection.execute(
                    f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) '
                    f'WHERE instr("{name}", ?) > 0',
                    (before, after, before),
                )


@pytest.fixture
def pipeline_copy(tiny_pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tiny pipeline's folder and store, to change freely; the test runs in it."""
    root = tmp_path / "project"
    shutil.copytree(tiny_pipeline, root)
    relocate_store(root / "mlflow.db", tiny_pipeline, root)
    work_in(monkeypatch, root)
    return root


@pytest.fixture(scope="session")
def trained_registry(tiny_pipeline: Path) -> dict[str, str]:
    """The tiny pipeline's MLflow store: a tiny model trained by the real stages, aliased
    `production`; returns the environment that points at it. Read it; move aliases in a
    `registry_copy`."""
    return store_env(tiny_pipeline)


@contextlib.contextmanager
def served_in_thread(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a background thread; yields its URL
    and stops it on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    # The socket opens at once; the first model load runs in the background.
    assert app.state.service.store.checked.wait(timeout=60), "the first load never ended"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server_url(trained_registry: dict[str, str]) -> Iterator[str]:
    """The real app, served by uvicorn on a free loopback port in a background thread.

    It serves the tiny test model, or the store named by LIVE_SERVER_TRACKING_URI (the README's
    screenshots are taken against the real production model that way).
    """
    from serving.app import create_app
    from serving.settings import ServingSettings

    store = os.environ.get("LIVE_SERVER_TRACKING_URI")
    env = {"MLFLOW_TRACKING_URI": store} if store else trained_registry
    with served_in_thread(create_app(ServingSettings(**env))) as url:
        yield url


def with_more_versions(
    registry: dict[str, str], patch: pytest.MonkeyPatch, count: int = 1
) -> MlflowClient:
    """Point this test at `registry` (a `registry_copy`) and register `count` more versions of
    its version 1's model (versions 2, 3…); its client."""
    for name, value in registry.items():
        patch.setenv(name, value)
    client = MlflowClient(registry["MLFLOW_TRACKING_URI"])
    mlflow.set_tracking_uri(registry["MLFLOW_TRACKING_URI"])
    source = client.get_model_version("mnist-cnn", "1").source
    for _ in range(count):
        mlflow.register_model(source, "mnist-cnn")
    return client


@pytest.fixture
def registry_copy(trained_registry: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The tiny registry's database copied, so that its aliases can be moved freely."""
    source = Path(trained_registry["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    shutil.copy(source, tmp_path / "mlflow.db")
    return {**trained_registry, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
