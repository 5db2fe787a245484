"""Benchmark: the same app under different process supervisors, side by side, in turn.

    MNIST_MODEL_PATH=model.onnx python -m bench.pool_throughput --baseline ../old-checkout

Each round starts, on 127.0.0.1 and one after the other, every variant with 2 workers and drives
`/predict` with a 28×28 PNG from `wrk` at 32 connections (1 s warm-up, then `--seconds`):

- `python -m serving` of this checkout (gunicorn's arbiter, uvicorn workers, a socket each);
- `python -m serving` of the `--baseline` checkout, if given (a08c526: its own SO_REUSEPORT pool);
- `uvicorn --workers 2` (uvicorn's multiprocess supervisor, one shared socket);
- gunicorn with uvicorn workers and one shared socket (gunicorn's default).

The machine is shared and noisy: the figures are the medians of `--repeat` rounds, and ratios
are of medians taken in the same run. Servers are stopped at the end of each measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.loadgen import free_port, running, wrk
from bench.serve_throughput import payloads

APP = "serving.app:create_app"


def variants(python: str, baseline: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Name → (command with `{port}` to fill in, extra environment)."""
    here = str(Path.cwd())
    found = {
        "python -m serving": ([python, "-m", "serving", "--port", "{port}", "--workers", "2"],
                              {"PYTHONPATH": here}),
    }  # fmt: skip
    if baseline is not None:
        found[f"python -m serving ({baseline.name})"] = (
            [python, "-m", "serving", "--port", "{port}", "--workers", "2"],
            {"PYTHONPATH": str(baseline.resolve())},
        )
    gunicorn = [python, "-m", "gunicorn", "--workers", "2", "--bind", "127.0.0.1:{port}",
                "--worker-class", "uvicorn_worker.UvicornWorker", f"{APP}()"]  # fmt: skip
    found["uvicorn --workers 2"] = (
        [python, "-m", "uvicorn", "--factory", APP, "--port", "{port}", "--workers", "2",
         "--no-access-log"],
        {"PYTHONPATH": here},
    )  # fmt: skip
    found["gunicorn, shared socket"] = (gunicorn, {"PYTHONPATH": here})
    return found


def measure(command: list[str], env: dict[str, str], body: tuple[bytes, str], seconds: float,
            connections: int) -> dict:  # fmt: skip
    port = free_port()
    filled = [part.replace("{port}", str(port)) for part in command]
    with tempfile.TemporaryDirectory(prefix="pool-bench-") as scratch:
        env = {
            **env,
            "MNIST_STORE_URL": f"sqlite:///{Path(scratch) / 'predictions.db'}",
            "PROMETHEUS_MULTIPROC_DIR": scratch,
            "MNIST_WORKERS": "2",
        }
        with running(filled, "/ready", port, env, timeout=180) as server:
            wrk(f"{server.url}/predict", *body, connections=8, seconds=1)  # warm-up
            return wrk(f"{server.url}/predict", *body, connections=connections, seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, help="an older checkout whose pool to compare")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = parser.parse_args()
    body = payloads()["png28"]
    chosen = {
        name: spec
        for name, spec in variants(args.python, args.baseline).items()
        if not args.only or name in args.only
    }
    rounds: dict[str, list[dict]] = {name: [] for name in chosen}
    for index in range(args.repeat):
        for name, (command, env) in chosen.items():
            result = measure(command, env, body, args.seconds, args.connections)
            rounds[name].append(result)
            print(json.dumps({"round": index, "variant": name, **result}), flush=True)
    first = next(iter(chosen))
    medians = {
        name: {
            "requests_per_s": statistics.median(r["requests_per_s"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "rounds_requests_per_s": [r["requests_per_s"] for r in results],
        }
        for name, results in rounds.items()
    }
    for entry in medians.values():
        entry["ratio_to_first"] = round(
            entry["requests_per_s"] / medians[first]["requests_per_s"], 3
        )
    print(json.dumps({"connections": args.connections, "cpu_count": os.cpu_count(),
                      "medians": medians}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
