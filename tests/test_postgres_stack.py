"""The shared-server set-up of docker-compose.yml, for real and without Docker: PostgreSQL behind
`mlflow server` (artifacts proxied by the server), the pipeline run against it, and two separate
API processes that serve the same version and follow a promotion together."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.loadgen import Server, free_port, multipart, running
from pipeline import registry
from tests.conftest import SEED_IMAGES, mlflow_server, run_pipeline, tiny_params
from tests.postgres import PostgresUnavailable, running_postgresql

pytestmark = pytest.mark.slow

MODEL = "mnist-cnn"
SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()


@pytest.fixture(scope="module")
def postgres_uri() -> Iterator[str]:
    try:
        with running_postgresql() as uri:
            yield uri
    except PostgresUnavailable as error:
        if os.environ.get("CI") == "true":  # CI installs PostgreSQL: there, a skip hides a bug
            pytest.fail(f"{error} CI must run this test.")
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def shared_server(
    postgres_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on PostgreSQL; yields its URL and the directory it stores artifacts in."""
    root = tmp_path_factory.mktemp("shared-mlflow")
    with mlflow_server(postgres_uri, root) as url:
        yield url, root / "artifacts"


def query(uri: str, sql: str, *args: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(uri) as connection:
        return connection.execute(sql, args).fetchall()


def api_process(tracking_uri: str) -> contextlib.AbstractContextManager[Server]:
    """`python -m serving` in its own process on a free loopback port, ready once it serves."""
    port = free_port()
    command = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MNIST_POLL_SECONDS": "0.5",
        "MNIST_INFERENCE_THREADS": "1",
        "MNIST_DECODE_THREADS": "1",
    }
    return running(command, "/ready", port, env, timeout=90)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def predict_seven(api: Server) -> dict:
    body, content_type = multipart([("file", "7.png", SEVEN)])
    request = urllib.request.Request(
        f"{api.url}/predict", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


def test_two_apis_serve_and_follow_a_registry_on_postgresql(
    shared_server: tuple[str, Path],
    postgres_uri: str,
    workdir: Path,
    raw_mnist,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, artifacts = shared_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    params_file = workdir / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params(*raw_mnist)))
    run_pipeline(params_file)

    client = MlflowClient(url)
    first = client.get_model_version_by_alias(MODEL, "production")
    # Runs and the registry are rows in PostgreSQL; the model files are in the server's store.
    assert query(postgres_uri, "SELECT status FROM runs WHERE run_uuid = %s", first.run_id) == [
        ("FINISHED",)
    ]
    aliases = "SELECT alias, version FROM registered_model_aliases WHERE name = %s"
    assert dict(query(postgres_uri, aliases, MODEL)) == {"production": int(first.version)}
    assert client.get_run(first.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(artifacts.rglob("*.onnx")), "the ONNX model is not in the server's artifact store"
    assert not {"mlartifacts", "mlruns", "mlflow.db"} & {path.name for path in workdir.iterdir()}

    with contextlib.ExitStack() as stack:
        apis = [stack.enter_context(api_process(url)) for _ in range(2)]
        assert apis[0].process.pid != apis[1].process.pid
        for api in apis:
            assert get_json(f"{api.url}/ready")["model_version"] == str(first.version)
            assert get_json(f"{api.url}/model")["version"] == str(first.version)
        one, other = (predict_seven(api) for api in apis)
        assert one["model_version"] == other["model_version"] == str(first.version)
        assert one["probabilities"] == other["probabilities"]

        # A second version of the same run's model, promoted with the registry CLI: both APIs
        # pick it up on their next poll, without a restart.
        second = mlflow.register_model(first.source, MODEL)  # as the register stage does
        registry.main(["promote", str(second.version), "--reason", "the stack test"])
        wait_for(
            lambda: all(
                get_json(f"{api.url}/model")["version"] == str(second.version) for api in apis
            ),
            timeout=30,
            what=f"both APIs serving version {second.version}",
        )
        one, other = (predict_seven(api) for api in apis)
        assert one["model_version"] == other["model_version"] == str(second.version)
        assert one["probabilities"] == other["probabilities"]

    assert all(api.process.poll() is not None for api in apis)  # both stopped
    assert dict(query(postgres_uri, aliases, MODEL)) == {
        "production": int(second.version),
        "previous": int(first.version),
    }
