"""Prometheus metrics, kept in a registry of each app's own (tests build many apps)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitoring.model_metrics import MonitoringMetrics


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "mnist_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mnist_http_request_duration_seconds",
            "Request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.predictions = Counter(
            "mnist_predictions",
            "Predictions by digit",
            ["digit", "uncertain"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "mnist_model_version",
            "Registry version being served",
            ["name", "alias"],
            registry=self.registry,
            # Several workers: the value the last scraped live worker set (the served version).
            multiprocess_mode="livemostrecent",
        )
        # What the alias names at the last registry check: differing from `model_version` for
        # long, the replica cannot load it (the `ServedVersionDiffersFromAlias` alert).
        self.alias_version = Gauge(
            "mnist_alias_version",
            "Registry version the alias names at the last check",
            ["name", "alias"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",  # as `model_version`
        )
        self.batch_size = Histogram(
            "mnist_inference_batch_size",
            "Images per ONNX Runtime call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "mnist_batch_queue_wait_seconds",
            "Time an image waited for its batch to start",
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=self.registry,
        )
        self.monitoring = MonitoringMetrics(self.registry)


def scrape(own: CollectorRegistry, shared: CollectorRegistry) -> bytes:
    """One scrape's text: this process's metrics or, with several workers (PROMETHEUS_MULTIPROC_DIR
    set, see `serving.workers`), every worker's summed; then `shared`, which every worker reads
    alike (the gauges read from the prediction store)."""
    if directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own = CollectorRegistry()
        MultiProcessCollector(own, path=directory)
    return generate_latest(own) + generate_latest(shared)


class RequestMetrics:
    """Pure ASGI middleware counting every response by route and status (500s included) and
    timing it; cheaper per request than an `@app.middleware("http")` function."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
