"""The shared-server set-up of docker-compose.yml, for real and without Docker: PostgreSQL behind
`mlflow server` (artifacts proxied by the server), the pipeline run against it, the API (in this
process) chosen by MLFLOW_TRACKING_URI alone, then two separate API processes that serve the
same version, follow a promotion together, and log predictions and feedback to a database of
their own on the same server (created by the compose file's job)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.loadgen import Server, free_port, multipart, running
from pipeline.registry import commands as registry
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, mlflow_server, ready_client, run_pipeline, tiny_params
from tests.postgres import PostgresUnavailable, postgres_bin, running_postgresql
from tests.test_compose import env_example, interpolated

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


def logged_row(store: str, prediction_id: str) -> bool:
    """Whether the log holds the prediction (its writer creates the tables with its first
    batch, a second after the first answer: until then there is no table to ask)."""
    import psycopg

    try:
        return bool(query(store, "SELECT id FROM predictions WHERE id = %s", prediction_id))
    except psycopg.errors.UndefinedTable:
        return False


@pytest.fixture(scope="module")
def predictions_store(postgres_uri: str) -> str:
    """The prediction log's database and login, made by docker-compose.yml's own job script
    (run twice: it must be idempotent); its SQLAlchemy URL as the API replicas get it."""
    job = interpolated(env_example())["services"]["create-predictions-db"]
    server = urllib.parse.urlsplit(postgres_uri)
    env = {
        **os.environ,
        **job["environment"],
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": server.username,
        "PGDATABASE": server.path.lstrip("/"),
        "PATH": f"{postgres_bin()}{os.pathsep}{os.environ['PATH']}",
    }
    for _ in range(2):
        result = subprocess.run(job["entrypoint"], env=env, capture_output=True, text=True,
                                timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
    names = job["environment"]
    return (
        f"postgresql+psycopg://{names['PREDICTIONS_USER']}:{names['PREDICTIONS_PASSWORD']}"
        f"@127.0.0.1:{server.port}/{names['PREDICTIONS_DB']}"
    )


def api_process(tracking_uri: str, store_url: str) -> contextlib.AbstractContextManager[Server]:
    """`python -m serving` in its own process on a free loopback port, ready once it serves."""
    port = free_port()
    command = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MNIST_STORE_URL": store_url,
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


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
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
    predictions_store: str,
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
    # The API in this process, against the server alone, serves that version.
    with ready_client(create_app(ServingSettings(MLFLOW_TRACKING_URI=url))) as api:
        assert api.get("/ready").status_code == 200
        response = api.post("/predict", files={"file": ("7.png", SEVEN, "image/png")})
        assert response.json()["model_version"] == str(first.version)

    with contextlib.ExitStack() as stack:
        apis = [stack.enter_context(api_process(url, predictions_store)) for _ in range(2)]
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
        # Feedback sent to one replica on what the other answered: the log is shared.
        store = predictions_store.replace("+psycopg", "")
        wait_for(
            lambda: logged_row(store, other["prediction_id"]),
            timeout=10,
            what="the other replica's prediction logged",
        )
        feedback = post_json(f"{apis[0].url}/feedback",
                             {"prediction_id": other["prediction_id"], "label": "7"})  # fmt: skip
        assert feedback["status"] == "pending"

    assert all(api.process.poll() is not None for api in apis)  # both stopped
    assert dict(query(postgres_uri, aliases, MODEL)) == {
        "production": int(second.version),
        "previous": int(first.version),
    }
    # Predictions and feedback are rows of the log's own database, none in MLflow's.
    logged = query(store, "SELECT model_version, length(pixels) FROM predictions ORDER BY 1")
    versions = [str(first.version)] * 2 + [str(second.version)] * 2
    assert logged == [(version, 784) for version in sorted(versions)]
    assert query(store, "SELECT prediction_id, label, status FROM feedback") == [
        (other["prediction_id"], "7", "pending")
    ]
    tables = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    assert {"predictions", "feedback"} <= {name for (name,) in query(store, tables)}
    assert not {"predictions", "feedback"} & {name for (name,) in query(postgres_uri, tables)}


def test_the_alias_history_is_kept_on_postgresql(
    shared_server: tuple[str, Path],
    postgres_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every alias move is a row of the registry's own tables, read back through the server;
    an event with a long reason still fits PostgreSQL's VARCHAR(5000) (SQLite never checks)."""
    url, _ = shared_server
    name = "history-check"  # a model of its own: the other test's aliases stay as they are
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MNIST_MODEL_NAME", name)
    client = MlflowClient(url)
    client.create_registered_model(name)
    run = client.create_run("0")  # the server's default experiment; no model files needed
    for _ in range(2):
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    registry.main(["promote", "1", "--reason", "first on the server"])
    registry.main(["promote", "2", "--reason", "a long reason " * 500])
    registry.main(["rollback", "--reason", "2 misreads sevens"])
    capsys.readouterr()
    registry.main(["history", "--json"])
    events = json.loads(capsys.readouterr().out)
    assert [(e["alias"], e["from_version"], e["to_version"], e["reason"][:26]) for e in events] == [
        ("production", "2", "1", "rollback: 2 misreads seven"),
        ("previous", "1", "2", "'production' moved to vers"),
        ("production", "1", "2", "a long reason a long reaso"),
        ("previous", None, "1", "'production' moved to vers"),
        ("production", None, "1", "first on the server"),
    ]
    rows = query(postgres_uri, "SELECT value FROM registered_model_tags WHERE name = %s "
                 "AND key LIKE 'alias_event.%%'", name)  # fmt: skip
    assert sorted(json.loads(value)["time"] for (value,) in rows) == sorted(
        e["time"] for e in events
    )
    assert "rollback: 2 misreads sevens" in client.get_registered_model(name).description
