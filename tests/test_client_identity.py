"""Who a feedback client is: the stored key is an HMAC of its address with the deployment's
secret (kept in the store, never logged), and behind a trusted proxy the budget follows the
client the proxy names, not the proxy."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.loadgen import free_port, post_picture, running
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, download_production, ready_client

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()


def test_the_stored_key_is_an_hmac_with_the_stores_secret_never_logged(
    trained_registry: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "predictions.db"
    settings = ServingSettings(**trained_registry, MNIST_STORE_URL=f"sqlite:///{path}")
    caplog.set_level(logging.DEBUG)
    with ready_client(create_app(settings)) as client:
        answer = client.post("/predict", files={"file": ("7.png", SEVEN, "image/png")}).json()
        given = client.post("/feedback", json={"prediction_id": answer["prediction_id"],
                                                "label": "7"})  # fmt: skip
        metrics = client.get("/metrics").text
    assert given.status_code == 201, given.text
    with sqlite3.connect(path) as connection:
        query = "SELECT value FROM secrets WHERE name = 'client_key'"
        (secret,) = connection.execute(query).fetchone()
        (stored,) = connection.execute("SELECT client_hash FROM feedback").fetchone()
    address = "testclient"  # the peer Starlette's test client reports
    assert stored == hmac.new(secret.encode(), address.encode(), hashlib.sha256).hexdigest()
    assert stored != hashlib.sha256(f"mnist-feedback:{address}".encode()).hexdigest()
    assert len(secret) == 64  # 32 random bytes
    assert secret not in caplog.text and secret not in metrics


def feedback_from(url: str, client: str) -> int:
    """A prediction, then its feedback as forwarded for `client`; the feedback's status."""
    answer = post_picture(f"{url}/predict", "7.png", SEVEN)
    body = json.dumps({"prediction_id": answer["prediction_id"], "label": "7"}).encode()
    headers = {"Content-Type": "application/json", "X-Forwarded-For": client}
    request = urllib.request.Request(f"{url}/feedback", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
@pytest.mark.parametrize(("trusted", "expected"), [("127.0.0.1", [201, 201, 429]),
                                                   ("", [201, 429, 429])])  # fmt: skip
def test_the_budget_is_per_client_behind_a_trusted_proxy_only(
    trained_registry: dict[str, str], tmp_path: Path, trusted: str, expected: list[int]
) -> None:
    model = download_production(trained_registry["MLFLOW_TRACKING_URI"], tmp_path / "model")
    port = free_port()
    command = [sys.executable, "-m", "serving", "--port", str(port), "--workers", "1"]
    env = {
        "MNIST_MODEL_PATH": str(model),
        "MNIST_STORE_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
        "MNIST_FEEDBACK_PER_HOUR": "1",
        "MNIST_TRUSTED_PROXIES": trusted,
    }
    with running(command, "/ready", port, env) as server:
        statuses = [feedback_from(server.url, client)
                    for client in ("203.0.113.1", "203.0.113.2", "203.0.113.1")]  # fmt: skip
    # Trusted, the proxy's header names two clients with a budget each; untrusted, the header
    # is ignored and every request is the one peer, 127.0.0.1.
    assert statuses == expected
