"""Several workers, one scrape: prometheus-client's multiprocess mode sums every worker's counts."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from bench.loadgen import Server, free_port, post_picture, running
from tests.conftest import SEED_IMAGES

pytestmark = pytest.mark.slow

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()
REQUESTS = 24


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        return response.read().decode()


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    found = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{key}="{value}"' in (match[1] or "") for key, value in labels.items()):
            found += float(match[2])
    return found


def worker_counts(server: Server) -> list[str]:
    """Each worker's own counters, read from its file alone in the shared metrics directory
    (`counter_<pid>.db`, one per worker process)."""
    # The workers' own files, open in them (forked workers' /proc environ is the server's at
    # its start, without the directory the server made for them).
    children = psutil.Process(server.process.pid).children()
    directory = next(
        Path(file.path).parent
        for child in children
        for file in child.open_files()
        if Path(file.path).name.startswith("counter_")
    )
    texts = []
    for counters in sorted(directory.glob("counter_*.db")):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(counters, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            texts.append(generate_latest(registry).decode())
    return texts


def both_ready(url: str, in_a_row: int = 12, timeout: float = 120) -> None:
    """Wait until /ready answers 200 on many new connections in a row: one worker answering
    says nothing of the other, which loads its model on its own (in the background)."""
    deadline, answered = time.monotonic() + timeout, 0
    while answered < in_a_row:
        assert time.monotonic() < deadline, "a worker never loaded its model"
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=10):
                answered += 1
        except urllib.error.HTTPError:
            answered = 0
            time.sleep(0.2)


def test_two_workers_counts_add_up_in_one_scrape(trained_registry: dict[str, str]) -> None:
    port = free_port()
    command = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "2"]  # fmt: skip
    env = {**trained_registry, "MNIST_INFERENCE_THREADS": "1", "MNIST_DECODE_THREADS": "1"}
    with running(command, "/ready", port, env, timeout=180) as server:
        both_ready(server.url)
        # A new connection each: the kernel spreads them over both workers' sockets.
        versions = {post_picture(f"{server.url}/predict", "7.png", SEVEN)["model_version"]
                for _ in range(REQUESTS)}  # fmt: skip
        assert len(versions) == 1
        scrapes = [scrape(server.url) for _ in range(6)]  # they land on either worker
        per_worker = [total(text, "mnist_predictions_total") for text in worker_counts(server)]
    assert len(per_worker) == 2 and all(per_worker), f"a worker served nothing: {per_worker}"
    assert sum(per_worker) == REQUESTS
    for text in scrapes:
        route = {"method": "POST", "route": "/predict", "status": "200"}
        assert total(text, "mnist_http_requests_total", **route) == REQUESTS
        assert total(text, "mnist_predictions_total") == REQUESTS
        assert total(text, "mnist_version_predictions_total", source="upload") == REQUESTS
        assert total(text, "mnist_prediction_confidence_count") == REQUESTS
        assert total(text, "mnist_prediction_log_written_total") <= REQUESTS
    assert total(scrapes[-1], "mnist_model_version") > 0
