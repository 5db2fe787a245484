"""Benchmark: the CPU one `/predict` request costs the app, in process, against an older copy.

    git archive fd3386b | (mkdir -p /tmp/before && tar -x -C /tmp/before)   # an older version
    python -m bench.request_cpu --baseline /tmp/before            # 5 rounds, canvas and 28×28

No HTTP server and no load generator: each side builds the app (`serving.app.create_app`, the
model from `MNIST_MODEL_PATH`, default `models/model.onnx`; no prediction log, no shadow) and
calls it as an ASGI application with the serving benchmark's own multipart bodies, 8 requests
at a time, and reports the process's CPU time (every thread: the batcher's ONNX calls too) and
the event loop's thread's alone, per request. What is left is what the app's own code costs: the
framework, decoding, preprocessing, batching, the answer.

This checkout and the `--baseline` folder run **at the same moment**, one process each (the
machine has two cores), in every round, so whatever else the shared host does falls on both
alike; the table gives each round's ratio and their median. Writes `bench/results/request_cpu.json`
and a markdown table (`.md`) beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.report import save

PAYLOADS = ("canvas", "png28")
CONCURRENCY = 8
WARM_UP = 300


def _scope(body: bytes, content_type: str) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip


async def _drive(payload: str, requests: int) -> dict[str, float]:
    """Build the app of the checkout on `sys.path` and time `requests` of `payload` through it."""
    from bench.serve_throughput import payloads
    from serving.app import create_app

    app = create_app()
    body, content_type = payloads()[payload]
    scope = _scope(body, content_type)

    async def one() -> None:
        sent: list[dict] = []
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if delivered:  # the app reads the body once; a second read would be a disconnect
                await asyncio.Event().wait()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(dict(scope), receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"/predict answered {sent[0]['status']}: {sent[1:]}")

    async def client(count: int) -> None:
        for _ in range(count):
            await one()

    async with app.router.lifespan_context(app):
        await client(WARM_UP)
        gc.collect()
        gc.freeze()  # as the server's workers do once started
        cpu, main = time.process_time(), time.thread_time()
        await asyncio.gather(*(client(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
        done = requests // CONCURRENCY * CONCURRENCY
        return {
            "cpu_us": (time.process_time() - cpu) / done * 1e6,
            "main_thread_us": (time.thread_time() - main) / done * 1e6,
        }


def _side(tree: Path, payload: str, requests: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "MNIST_MODEL_PATH": str(Path(os.environ.get("MNIST_MODEL_PATH", "models/model.onnx"))
                                .resolve()),
        "MNIST_PREDICTION_LOG": "false",
        "MNIST_SHADOW_SAMPLE_RATE": "0",
        "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    # This file drives either side: the tree's own `serving` and `bench` come first on the path.
    command = [sys.executable, str(Path(__file__).resolve()), "--drive", payload, str(requests)]
    return subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen) -> dict[str, float]:
    out, _ = process.communicate(timeout=600)
    if process.returncode:
        raise RuntimeError(f"{process.args} exited with {process.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _medians(cells: list[dict], key: str) -> str:
    """The medians over rounds of one figure of the two sides, as "baseline → this"."""
    baseline, ours = (
        statistics.median(c[side][key] for c in cells) for side in ("baseline", "ours")
    )
    return f"{baseline:,.0f} → {ours:,.0f}"


def table(results: dict) -> str:
    lines = [
        f"{results['date']}, {results['cpu_model']}, baseline {results['baseline']}, "
        f"{results['requests']} requests a side and round, {len(results['rounds'])} rounds, "
        "both sides at once",
        "",
        "| request | CPU µs, baseline → this (median) | ratio per round | ratio (median) "
        "| event loop's thread µs, baseline → this |",
        "|---|---|---|---|---|",
    ]
    for payload in results["payloads"]:
        cells = [r[payload] for r in results["rounds"]]
        ratios = [c["ours"]["cpu_us"] / c["baseline"]["cpu_us"] for c in cells]
        cpu, main = (_medians(cells, key) for key in ("cpu_us", "main_thread_us"))
        lines.append(
            f"| {payload} | {cpu} | {' / '.join(f'{x:.3f}' for x in ratios)} "
            f"| {statistics.median(ratios):.3f} | {main} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, help="a checkout of another version")
    parser.add_argument("--requests", type=int, default=6000, help="per side and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--payloads", nargs="+", default=list(PAYLOADS), choices=PAYLOADS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/request_cpu.json"))
    parser.add_argument("--drive", nargs=2, metavar=("PAYLOAD", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:  # one side of a round, in its own process
        import uvloop

        print(json.dumps(uvloop.run(_drive(args.drive[0], int(args.drive[1])))))
        return
    if args.baseline is None:
        parser.error("--baseline is required")
    if args.requests < CONCURRENCY:
        parser.error(
            f"--requests must be at least {CONCURRENCY}: they are sent {CONCURRENCY} at a time"
        )
    from bench.machine import cpu_model  # imports torch: not in the driven processes

    here = Path.cwd()
    rounds = []
    for index in range(args.rounds):
        cell = {}
        for payload in args.payloads:
            ours = _side(here, payload, args.requests)
            baseline = _side(args.baseline.resolve(), payload, args.requests)
            cell[payload] = {"ours": _result(ours), "baseline": _result(baseline)}
        rounds.append(cell)
        print(json.dumps({"round": index + 1, **cell}), flush=True)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "baseline": str(args.baseline),
        "requests": args.requests,
        "payloads": args.payloads,
        "rounds": rounds,
    }
    save(results, table(results), args.out)


if __name__ == "__main__":
    main()
