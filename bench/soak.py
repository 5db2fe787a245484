"""Soak: a bounded number of requests at high concurrency while the alias moves back and forth.

    python -m bench.soak --requests 20000 --connections 64       # the figure in RELIABILITY.md
    python -m bench.soak --requests 2000 --connections 32        # the size the test suite runs

Starts our API (`--workers 2`, polling the registry every 0.2 s) on 127.0.0.1 and moves the
`production` alias between the two newest versions every half second (each move makes every
worker load the other version). Under those moves it sends the 280×280 canvas drawing with `wrk`:
a 5 s warm-up at the same concurrency, after which the workers' memory is read, then a run long
enough for at least `--requests` answers (its length estimated from the warm-up's rate, at most
`--seconds`). Reports errors (socket errors, time-outs and non-2xx answers), memory before and
after the run, and which versions answered. Needs two registered versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.loadgen import free_port, running, wrk
from bench.serve_throughput import payloads
from serving.settings import ServingSettings


def flip_alias(settings: ServingSettings, versions: list[str], stop: threading.Event) -> int:
    """Move the alias between `versions` every 0.5 s until `stop`; return how many moves."""
    client = MlflowClient(settings.tracking_uri)
    moves = 0
    while not stop.wait(0.5):
        moves += 1
        client.set_registered_model_alias(
            settings.model_name, settings.model_alias, versions[moves % len(versions)]
        )
    client.set_registered_model_alias(settings.model_name, settings.model_alias, versions[0])
    return moves


def answered_version(url: str, body: bytes, content_type: str) -> str:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["model_version"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=300, help="upper bound on the run")
    parser.add_argument("--python", default=sys.executable, help="interpreter of our API")
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args()

    settings = ServingSettings()
    client = MlflowClient(settings.tracking_uri)
    newest = sorted(
        client.search_model_versions(f"name = '{settings.model_name}'"),
        key=lambda v: int(v.version),
    )[-2:]
    if len(newest) < 2:
        raise SystemExit("Needs two registered versions to move the alias between.")
    versions = [str(v.version) for v in newest]
    client.set_registered_model_alias(settings.model_name, settings.model_alias, versions[0])
    body, content_type = payloads()["png280"]
    port = free_port()
    command = [args.python, "-m", "serving", "--port", str(port), "--workers", "2"]
    env = {"MLFLOW_TRACKING_URI": settings.tracking_uri, "MNIST_POLL_SECONDS": "0.2"}
    with running(command, "/ready", port, env) as server:
        url = f"{server.url}/predict"
        stop = threading.Event()
        moves: list[int] = []
        flipper = threading.Thread(
            target=lambda: moves.append(flip_alias(settings, versions, stop))
        )
        flipper.start()
        seen: set[str] = set()
        results: list[dict] = []
        try:
            warm = wrk(url, body, content_type, args.connections, seconds=5)
            rss_before = server.worker_rss_mib()
            seconds = min(args.seconds, 1.15 * args.requests / warm["requests_per_s"] + 1)
            load = threading.Thread(
                target=lambda: results.append(
                    wrk(url, body, content_type, args.connections, seconds)
                )
            )
            load.start()
            while load.is_alive():
                seen.add(answered_version(url, body, content_type))
                time.sleep(0.25)
            load.join()
        finally:
            stop.set()
            flipper.join()
        summary = results[0] | {
            "warm_up_errors": warm["errors"],
            "alias_moves": moves[0],
            "versions_answering": sorted(seen),
            "rss_mib_before": rss_before,
            "rss_mib_after": server.worker_rss_mib(),
        }
    growth = max(a / b - 1 for a, b in zip(summary["rss_mib_after"], rss_before, strict=True))
    summary["rss_growth"] = round(growth, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
