"""Benchmark: our `/predict` against `mlflow models serve` in paired rounds at one concurrency.

    python -m bench.serve_paired                      # c=32, 2 workers each, 5 rounds of 8 s
    python -m bench.serve_paired --rounds 1 --seconds 1 --out /tmp/x.json   # a smoke run

Both servers serve the same registered ONNX version and stay up for the whole run, each idle
while the other is measured; a round measures ours on every payload (the page's 280×280 canvas
PNG, a 28×28 PNG) and theirs on the 28×28 digit as a JSON tensor, one after the other, so each
round's ratios come from the same minute of a noisy machine. The table shows each round's ratio
and the median. Both listen on 127.0.0.1 only and are stopped at the end. Writes
`bench/results/serve_paired.json` and a markdown table (`.md`) beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.loadgen import free_port, running, wrk
from bench.machine import cpu_model
from bench.report import paired_row, save
from bench.serve_throughput import mlflow_serve_command, payloads
from mnist_core.classifier import default_threads
from serving.settings import ServingSettings

OURS = ("canvas", "png280", "png28")


def table(results: dict) -> str:
    """Markdown: one row per payload, req/s and p99 per round, the ratio to mlflow's median."""
    rounds = results["rounds"]
    lines = [
        f"{results['date']}, {results['cpu_model']}, {results['cores']} cores, "
        f"{results['workers']} workers each, c={results['connections']}, "
        f"{results['seconds']} s per cell, {len(rounds)} paired rounds",
        "",
        "| server, payload | req/s (median) | p99 ms (median) | ratio to mlflow, per round | "
        "ratio (median) |",
        "|---|---|---|---|---|",
    ]
    mlflow = [r["json28"] for r in rounds]
    for name in (*OURS, "json28"):
        label = "mlflow, JSON 28×28" if name == "json28" else f"ours, {name}"
        lines.append(paired_row(label, [r[name] for r in rounds], mlflow))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="processes of each server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8, help="per cell")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_paired.json"))
    args = parser.parse_args()

    settings = ServingSettings()
    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, settings.model_alias).version
    # No shadow scoring, whatever version holds the challenger alias: bench.shadow_overhead
    # measures that on its own.
    env = {"MLFLOW_TRACKING_URI": settings.tracking_uri, "MNIST_SHADOW_SAMPLE_RATE": "0"}
    bodies = payloads()
    ours_port, theirs_port = free_port(), free_port()
    ours_command = [sys.executable, "-m", "serving", "--port", str(ours_port)]
    ours_command += ["--workers", str(args.workers)]
    model_uri = f"models:/{settings.model_name}@{settings.model_alias}"
    theirs_command = mlflow_serve_command(model_uri, theirs_port, args.workers)
    rounds = []
    with contextlib.ExitStack() as servers:
        ours = servers.enter_context(running(ours_command, "/ready", ours_port, env))
        theirs = servers.enter_context(running(theirs_command, "/ping", theirs_port, env, 180))
        cells = {name: (ours.url + "/predict", bodies[name]) for name in OURS}
        cells["json28"] = (theirs.url + "/invocations", bodies["json28"])
        for url, body in cells.values():
            wrk(url, *body, connections=8, seconds=1)  # warm-up
        for number in range(args.rounds):
            measured = {
                name: wrk(url, *body, connections=args.connections, seconds=args.seconds)
                for name, (url, body) in cells.items()
            }
            rounds.append(measured)
            print(json.dumps({"round": number + 1, **measured}), flush=True)

    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cores": default_threads(),
        "model": f"{settings.model_name} version {version}",
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": rounds,
    }
    save(results, table(results), args.out)


if __name__ == "__main__":
    main()
