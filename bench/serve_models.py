"""Benchmark: what a model costs to serve, two ONNX files side by side in paired rounds.

    python -m bench.train_accuracy --seeds 1 -S train.preset=best --keep-onnx /tmp/best
    python -m bench.serve_models models/model.onnx /tmp/best/seed1.onnx     # ~2 minutes

Each file is served by its own `python -m serving` (`MNIST_MODEL_PATH`, 2 workers, no registry,
127.0.0.1 only, stopped at the end); both stay up, and each round drives one, then the other
(the order swapped every round) with `wrk` at c=32 on a 28×28 PNG and on the page's canvas. The
table gives each file's median req/s and p99 and the median of the per-round ratios to the
first file. Writes `bench/results/serve_models.json` and a markdown table (`.md`) beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.loadgen import free_port, running, wrk
from bench.machine import cpu_model
from bench.report import paired_row, save
from bench.serve_throughput import payloads

PAYLOADS = ("png28", "canvas")


def table(results: dict) -> str:
    rounds, models = results["rounds"], results["models"]
    lines = [
        f"{results['date']}, {results['cpu_model']}, {results['workers']} workers, "
        f"c={results['connections']}, {results['seconds']} s per cell, {len(rounds)} paired rounds",
        "",
        "| model, payload | req/s (median) | p99 ms (median) | ratio to the first, per round "
        "| ratio (median) |",
        "|---|---|---|---|---|",
    ]
    for payload in PAYLOADS:
        firsts = [r[models[0]][payload] for r in rounds]
        for model in models:
            cells = [r[model][payload] for r in rounds]
            lines.append(paired_row(f"{Path(model).name}, {payload}", cells, firsts))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", type=Path, nargs=2, help="two ONNX files: the first is the base")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_models.json"))
    args = parser.parse_args()
    bodies = payloads()
    models = [str(model.resolve()) for model in args.models]
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "models": models,
        "rounds": [],
    }
    with contextlib.ExitStack() as stack:
        urls = {}
        for model in models:
            port = free_port()
            command = [sys.executable, "-m", "serving", "--port", str(port),
                       "--workers", str(args.workers)]  # fmt: skip
            env = {"MNIST_MODEL_PATH": model, "MNIST_SHADOW_SAMPLE_RATE": "0"}
            stack.enter_context(running(command, "/ready", port, env))
            urls[model] = f"http://127.0.0.1:{port}/predict"
        for url in urls.values():  # warm both up
            wrk(url, *bodies["png28"], args.connections, 2)
        for number in range(args.rounds):
            order = models if number % 2 == 0 else models[::-1]
            measured = {
                model: {
                    payload: wrk(urls[model], *bodies[payload], args.connections, args.seconds)
                    for payload in PAYLOADS
                }
                for model in order
            }
            results["rounds"].append(measured)
            print(json.dumps({"round": number + 1, **measured}), flush=True)
    save(results, table(results), args.out)


if __name__ == "__main__":
    main()
