"""The server's processes: gunicorn's arbiter supervising uvicorn workers (`uvicorn-worker`).

The arbiter replaces a worker that dies (SIGKILL, out of memory) at once; the replacement takes
no connection before its model is loaded (`serving.starting`). When workers keep dying — more
than `MNIST_CRASH_LOOP_DEATHS` replacements within `MNIST_CRASH_LOOP_SECONDS` — the server stops
and says so rather than restarting them for ever. SIGTERM drains: the workers stop accepting,
finish the requests in flight (within `MNIST_GRACEFUL_SECONDS`) and flush the prediction log.

Each worker has a listening socket of its own (`SO_REUSEPORT`), so the kernel spreads
connections evenly over them: with one shared socket, whichever worker is awake
when a burst of connections arrives accepts most of them (`bench/README.md`, "process
supervisors").

With several workers, prometheus-client's multiprocess mode makes one scrape of any worker
report all of them: each worker keeps its counters in files in a fresh directory named by
PROMETHEUS_MULTIPROC_DIR, and `/metrics` sums them (`serving.metrics.scrape`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer
from uvicorn_worker import UvicornWorker

from serving.settings import ServingSettings
from serving.starting import WAIT_FOR_MODEL_POLL_SECONDS, StartingApp


def _build_app() -> object:
    """The worker's real app, with the process tuned for it (on `StartingApp`'s thread)."""
    from serving import process
    from serving.app import create_app  # FastAPI, NumPy…: imported once the socket listens

    settings = ServingSettings()
    process.tune(settings)
    return create_app(settings)


def _started(app: object) -> None:
    from serving import process

    process.freeze_what_is_loaded()
    # The first model load, in the background, imports MLflow and ONNX Runtime: what it leaves
    # lives as long as the process too.
    freezing = asyncio.get_running_loop().create_task(_freeze_after_first_load(app))
    _background.add(freezing)
    freezing.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()  # a task the loop holds only weakly


async def _freeze_after_first_load(app: object) -> None:
    from serving import process

    while not _model_checked(app):
        await asyncio.sleep(WAIT_FOR_MODEL_POLL_SECONDS)
    process.freeze_what_is_loaded()


def _model_checked(app: object) -> bool:
    """The first load of the model has ended: loaded, or failed (a registry that is down) with
    the reason on `/ready`, as on a worker that started with the server."""
    return app.state.service.store.checked.is_set()  # type: ignore[attr-defined]


def _stop_worker(_: BaseException) -> None:
    # The real app cannot start (a model file that cannot be loaded): this exit status makes
    # the arbiter stop the server ("Worker failed to boot") instead of replacing the worker.
    os._exit(Arbiter.WORKER_BOOT_ERROR)


class Worker(UvicornWorker):
    """A uvicorn worker that serves `StartingApp`: `/health` at once; a worker started after the
    first ones (a replacement) takes no connection before its model's first load has ended."""

    # uvicorn's own keep-alive (gunicorn's default, 2 s, would close idle connections sooner).
    CONFIG_KWARGS: ClassVar[dict[str, object]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "timeout_keep_alive": 5,
    }

    @property
    def replacement(self) -> bool:
        return self.age > self.cfg.workers

    def init_process(self) -> None:
        # A socket of its own, bound but not listening: the kernel sends it no connection until
        # uvicorn listens on it, once the app has started (a replacement: once its model's first
        # load has ended). A socket gunicorn made listening would receive connections at once.
        self.sockets = [_not_listening(address) for address in self.cfg.address]
        super().init_process()

    def load_wsgi(self) -> None:
        self.wsgi = StartingApp(
            _build_app, _model_checked, _stop_worker, on_started=_started, wait=self.replacement
        )


def _not_listening(address: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    bound = socket.socket(family, socket.SOCK_STREAM)
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    bound.bind(address)
    return bound


def when_ready(server: Arbiter) -> None:
    # `reuse_port` kept the arbiter from listening itself (it has started: read no more);
    # off, it does not make the workers listening sockets either: `Worker` makes its own.
    server.cfg.set("reuse_port", False)


class CrashLoop:
    """Stops the arbiter when more than `deaths` workers had to be replaced within `seconds`."""

    def __init__(self, workers: int, deaths: int, seconds: float) -> None:
        self.workers, self.deaths, self.seconds = workers, deaths, seconds
        self.spawned = 0
        self.replaced: deque[float] = deque()

    def pre_fork(self, server: Arbiter, worker: Worker) -> None:
        self.spawned += 1
        if self.spawned <= self.workers:
            return
        now = time.monotonic()
        self.replaced.append(now)
        while self.replaced and now - self.replaced[0] > self.seconds:
            self.replaced.popleft()
        if len(self.replaced) > self.deaths:
            raise HaltServer(
                f"{len(self.replaced)} workers died within {self.seconds:.0f} s "
                "(MNIST_CRASH_LOOP_DEATHS, MNIST_CRASH_LOOP_SECONDS): the server stops rather "
                "than start them again. The log above says how each one ended.",
                1,
            )


def child_exit(server: Arbiter, worker: Worker) -> None:
    """A worker ended: its live gauges leave the scrape (prometheus-client's multiprocess mode),
    and predictions it still held unwritten are counted and said (`monitoring.model_metrics`)."""
    from prometheus_client import multiprocess

    from monitoring.model_metrics import count_unwritten_of_dead_worker

    if directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        count_unwritten_of_dead_worker(Path(directory), worker.pid)
        multiprocess.mark_process_dead(worker.pid, directory)


class Pool(BaseApplication):
    """gunicorn configured in code (its documented "custom application")."""

    def __init__(self, options: dict[str, object]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> object:  # unused: `Worker.load_wsgi` builds the app
        return _build_app()


@contextlib.contextmanager
def shared_metrics_directory() -> Iterator[str]:
    """A fresh directory for the workers' metric files, named to them by PROMETHEUS_MULTIPROC_DIR
    (read when a worker imports prometheus_client, so it is set before they start), removed
    once they have stopped: counts from an earlier start must not add to this one's."""
    directory = tempfile.mkdtemp(prefix="mnist-metrics-")
    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
        shutil.rmtree(directory, ignore_errors=True)


def serve(host: str, port: int, settings: ServingSettings, access_log: bool) -> None:
    """Serve the app from `settings.workers` supervised processes until SIGTERM or SIGINT."""
    crash_loop = CrashLoop(settings.workers, settings.crash_loop_deaths,
                           settings.crash_loop_seconds)  # fmt: skip
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": settings.workers,
        "worker_class": Worker,
        "reuse_port": True,
        "graceful_timeout": settings.graceful_seconds,
        # uvicorn reads X-Forwarded-For from these peers only (its `proxy_headers`, on).
        "forwarded_allow_ips": settings.trusted_proxies,
        "accesslog": "-" if access_log else None,
        "loglevel": "info",
        "proc_name": "mnist-serving",
        "when_ready": when_ready,
        "pre_fork": crash_loop.pre_fork,
        "child_exit": child_exit,
        # gunicorn's control socket (a file in the home directory) is not used here.
        "control_socket_disable": True,
    }
    with shared_metrics_directory():
        Pool(options).run()
