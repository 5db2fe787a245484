"""The server's processes (`python -m serving`): `/health` within a second whatever the registry
does, a killed worker replaced under load, a crash loop stopped, SIGTERM drained."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.loadgen import free_port, multipart, post_picture, stop_group, wait_until_ready
from monitoring.store import open_store
from tests.conftest import SEED_IMAGES, download_production
from tests.test_faults import eventually
from tests.test_worker_metrics import scrape, total

pytestmark = pytest.mark.slow

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()


@contextlib.contextmanager
def server(env: dict[str, str], log: Path, workers: int = 2) -> Iterator[subprocess.Popen]:
    """`python -m serving` on a free loopback port (its output in `log`), stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers)]  # fmt: skip
    full_env = {**psutil.Process().environ(), **env, "MNIST_INFERENCE_THREADS": "1"}
    with log.open("w") as output:
        process = subprocess.Popen(command, env=full_env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    process.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        stop_group(process)


def workers_of(process: subprocess.Popen) -> set[int]:
    return {child.pid for child in psutil.Process(process.pid).children()}


@pytest.fixture(scope="module")
def model_env(trained_registry: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Serve the tiny production model as a local file: no registry to wait for."""
    directory = tmp_path_factory.mktemp("model") / "model"
    download_production(trained_registry["MLFLOW_TRACKING_URI"], directory)
    return {"MNIST_MODEL_PATH": str(directory)}


def first_health_seconds(tmp_path: Path) -> tuple[float, int]:
    """Seconds from the process's start to its first `/health` 200 with a dead registry, and
    what `/ready` answers then."""
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"MLFLOW_TRACKING_URI": dead, "MNIST_STORE_URL": f"sqlite:///{tmp_path / 'p.db'}"}
    started = time.monotonic()
    with server(env, tmp_path / "server.log") as process:
        while True:
            assert time.monotonic() - started < 30, (tmp_path / "server.log").read_text()
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{process.url}/health", timeout=1):
                    seconds = time.monotonic() - started
                break
            time.sleep(0.01)
        with pytest.raises(urllib.error.HTTPError) as ready:
            urllib.request.urlopen(f"{process.url}/ready", timeout=5)
    return seconds, ready.value.code


def test_health_answers_before_the_heavy_imports_with_the_registry_down(tmp_path: Path) -> None:
    # Not the 1 s target itself (a timing, measured apart): a bound the old start order, which
    # imported the app with MLflow and ONNX Runtime before listening, missed wherever it was
    # measured (4.1-13.7 s); the best of five starts, each one's own start from exec.
    starts = [first_health_seconds(tmp_path) for _ in range(5)]
    assert min(seconds for seconds, _ in starts) <= 3.0, starts
    assert {status for _, status in starts} == {503}  # no model loaded: not ready


# A killed worker's requests fail within this long of the kill (its process torn down).
DEATH_SECONDS = 1.0


class Load:
    """Clients posting a picture in a loop, each request on a new connection, counting what
    every request got (a status, or the exception's name)."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.outcomes, self.stopping = url, Counter(), threading.Event()
        self.failed_at: list[float] = []  # time.monotonic() of each request that failed
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        while not self.stopping.is_set():
            try:
                post_picture(f"{self.url}/predict", "7.png", SEVEN, timeout=30)
                self.outcomes[200] += 1
            except urllib.error.HTTPError as error:
                self.outcomes[error.code] += 1
                self.failed_at.append(time.monotonic())
            except OSError as error:
                self.outcomes[type(error).__name__] += 1
                self.failed_at.append(time.monotonic())

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_a_killed_worker_is_replaced_and_only_its_requests_in_flight_fail(
    model_env: dict, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    clients = 4
    with server({**model_env, "MNIST_STORE_URL": store_url}, tmp_path / "server.log") as process:
        wait_until_ready(f"{process.url}/ready", process, timeout=120, log=tmp_path / "server.log")
        before = workers_of(process)
        with Load(process.url, clients) as load:
            time.sleep(2)
            victim = min(before)
            killed_at = time.monotonic()
            psutil.Process(victim).kill()
            assert eventually(lambda: len(workers_of(process) - before) == 1, seconds=5)
            replaced_after = time.monotonic() - killed_at
            time.sleep(4)  # load goes on, over the survivor and the replacement
        assert process.poll() is None, "the server stopped"
        # The replacement serves: many new connections in a row answer.
        wait_until_ready(f"{process.url}/ready", process, timeout=60, log=tmp_path / "server.log")
        died = total(
            scrape(process.url), "mnist_prediction_log_dropped_total", reason="worker_died"
        )
        answered = load.outcomes[200]
        failed = sum(load.outcomes.values()) - answered
    # SIGTERM flushed the live workers' queues; what the killed one held is counted.
    store = open_store(store_url)
    rows = store.count_predictions()
    store.close()
    print(f"replaced after {replaced_after:.2f} s; {dict(load.outcomes)}; rows {rows}, died {died}")
    assert replaced_after <= 5
    # What fails is what the dying worker held: each client's request in flight on it, and at
    # most one more a client, a connection the kernel still gave the dying worker's socket in
    # the moment before its files were closed; nothing after that moment.
    assert answered > 50 and failed <= 2 * clients, load.outcomes
    assert all(killed_at <= at <= killed_at + DEATH_SECONDS for at in load.failed_at), [
        round(at - killed_at, 3) for at in load.failed_at
    ]
    assert answered <= rows + died <= answered + failed, (rows, died, load.outcomes)
    log = (tmp_path / "server.log").read_text()
    assert "predictions not yet written" in log or died == 0
    # Two workers (and the replacement) opened the fresh store together: no race, no error.
    assert "cannot be opened" not in log and "already exists" not in log, log


def test_a_crash_loop_stops_the_server_and_says_why(model_env: dict, tmp_path: Path) -> None:
    env = {**model_env, "MNIST_CRASH_LOOP_DEATHS": "2", "MNIST_CRASH_LOOP_SECONDS": "60",
           "MNIST_STORE_URL": f"sqlite:///{tmp_path / 'p.db'}"}  # fmt: skip
    log = tmp_path / "server.log"
    with server(env, log, workers=1) as process:
        wait_until_ready(f"{process.url}/ready", process, timeout=120, log=log)
        for _ in range(3):
            assert eventually(lambda: len(workers_of(process)) == 1, 10)
            (worker,) = workers_of(process)
            psutil.Process(worker).kill()
            eventually(lambda w=worker: w not in workers_of(process), 10)
        assert process.wait(timeout=30) != 0
    assert "3 workers died within 60 s" in log.read_text()


def test_sigterm_lets_the_request_in_flight_finish_and_flushes_the_log(
    model_env: dict, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    log = tmp_path / "server.log"
    with server({**model_env, "MNIST_STORE_URL": store_url}, log, workers=1) as process:
        wait_until_ready(f"{process.url}/ready", process, timeout=120, log=log)
        body, content_type = multipart([("file", "7.png", SEVEN)])
        port = int(process.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
            connection.sendall(head + body[:100])  # the request is in flight, half sent
            time.sleep(1)
            process.send_signal(signal.SIGTERM)
            time.sleep(1)
            connection.sendall(body[100:])
            answer = connection.recv(65536).decode()
        assert process.wait(timeout=40) == 0
    assert answer.startswith("HTTP/1.1 200"), answer[:300]
    store = open_store(store_url)
    assert store.count_predictions() == 1  # written on the way out
    store.close()
