"""Benchmark: what the prediction log costs the API, off and on side by side.

    python -m bench.logging_overhead --repeat 30 --seconds 6              # in turn, ~8 minutes
    python -m bench.logging_overhead --repeat 30 --seconds 6 --together   # at once, ~4 minutes
    python -m bench.logging_overhead --quick                              # a smoke run

Two servers (`python -m serving --workers 2`, the same model) start together, one with
`MNIST_PREDICTION_LOG=false` and one logging every prediction to a SQLite file that already holds
`--prefill` predictions (200,000: a log with a history). Each round drives `/predict` with a 28×28
PNG (the cheapest request, so the log's largest share) from `wrk` at c=32 on both servers: one
after the other, the order swapped every round, or with `--together` at the same moment, so that
whatever else the machine does falls on both exactly alike. Three figures:
- req/s: the medians, and the median of the rounds' on/off ratios (with a bootstrap interval);
- CPU per request: the servers' own CPU time (every process of each, `psutil`) over a round,
  divided by the requests answered in it (on/off ratios as above);
- CPU per logged prediction, in process: the record built and queued as a request does it, and
  the writer's share of batching and writing it into a log of `--prefill` rows.
The run fails if the logging server did not log every answer it gave, or the other logged any.

Needs `wrk` (Debian's package) and a `production` version in the configured MLflow registry (or
`MNIST_MODEL_PATH`). Both servers listen on 127.0.0.1 only and are stopped at the end. Writes
`bench/results/logging_overhead.json` and `.md` (or `--out`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
from prometheus_client import CollectorRegistry

from bench.loadgen import Server, free_port, running, wrk
from bench.machine import cpu_model
from bench.report import save
from bench.serve_throughput import payloads
from monitoring.model_metrics import MonitoringMetrics
from monitoring.records import PredictionRecord, new_prediction_id
from monitoring.settings import MonitoringSettings
from monitoring.store import open_store
from monitoring.writer import PredictionLog
from serving.settings import ServingSettings

STATES = ("off", "on")
WARM_UP_CONNECTIONS = 8


def prefilled(store_url: str, rows: int) -> None:
    """Give the log a history of `rows` predictions (a day ago), as a store that has served a
    while holds: what a row costs to add depends on the indexes it joins."""
    store = open_store(store_url)
    pixels = np.zeros((28, 28), np.uint8)
    probabilities = np.full(10, 0.1, np.float32)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    try:
        for start in range(0, rows, 10_000):
            history = [
                PredictionRecord(new_prediction_id(), "0", "upload", pixels, 1, probabilities,
                                 False, yesterday)
                for _ in range(min(10_000, rows - start))
            ]  # fmt: skip
            store.add_predictions(history)
    finally:
        store.close()


def cpu_seconds(server: Server) -> float:
    """User + system CPU seconds spent so far by a server's processes (workers included)."""
    total = 0.0
    for process in server.process_tree():
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def measured(server: Server, body: tuple[bytes, str], connections: int, seconds: float) -> dict:
    """One `wrk` run, with the server's CPU time per answered request."""
    before = cpu_seconds(server)
    cell = wrk(server.url + "/predict", *body, connections=connections, seconds=seconds)
    cell["cpu_us_per_request"] = round((cpu_seconds(server) - before) / cell["requests"] * 1e6, 1)
    return cell


def warmed_up(server: Server, body: tuple[bytes, str], timeout: float = 60) -> dict[str, int]:
    """Drive the server until a 2 s run gets no error (`/ready` answered by one worker says
    nothing of the other, which loads its model in the background): the answers it gave, and
    how many runs that took."""
    answered, runs, deadline = 0, 0, time.monotonic() + timeout
    while True:
        cell = wrk(server.url + "/predict", *body, connections=WARM_UP_CONNECTIONS, seconds=2)
        answered += cell["requests"] - cell["errors"]  # a 503 while loading is not logged
        runs += 1
        if cell["errors"] == 0:
            return {"answered": answered, "runs": runs}
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.url} still answers with errors after {timeout:.0f} s")


def one_round(
    args: argparse.Namespace, servers: dict[str, Server], body: tuple[bytes, str], index: int
) -> dict[str, dict]:
    """Both servers once: one after the other (the order swapped every round), or, with
    `--together`, at the same time, so that both share the machine's moment exactly."""
    if not args.together:
        order = STATES if index % 2 == 0 else STATES[::-1]
        return {
            state: measured(servers[state], body, args.connections, args.seconds) for state in order
        }
    with ThreadPoolExecutor(len(STATES)) as pool:
        runs = {
            state: pool.submit(measured, servers[state], body, args.connections, args.seconds)
            for state in STATES
        }
        return {state: run.result() for state, run in runs.items()}


def started(
    stack: contextlib.ExitStack, args: argparse.Namespace, body: tuple[bytes, str],
    envs: dict[str, dict[str, str]],
) -> tuple[dict[str, Server], dict[str, dict[str, int]]]:  # fmt: skip
    """One `python -m serving --workers N` per state, with its environment, each warmed up (and
    stopped when `stack` closes); the servers, and what each warm-up took (`warmed_up`)."""
    servers, warm_ups = {}, {}
    for state, env in envs.items():
        port = free_port()
        command = [args.python, "-m", "serving", "--port", str(port)]
        command += ["--workers", str(args.workers)]
        servers[state] = stack.enter_context(running(command, "/ready", port, env))
        warm_ups[state] = warmed_up(servers[state], body)
    return servers, warm_ups


def paired_rounds(
    args: argparse.Namespace, body: tuple[bytes, str], env: dict[str, str]
) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]], int]:
    """`--repeat` rounds of both servers (`one_round`); the requests each warm-up answered; and
    the rows written to the log (counted once both servers have stopped and written what they
    had queued)."""
    rounds: dict[str, list[dict]] = {state: [] for state in STATES}
    with tempfile.TemporaryDirectory() as scratch:
        store_url = f"sqlite:///{scratch}/predictions.db"
        prefilled(store_url, args.prefill)
        with contextlib.ExitStack() as stack:
            envs = {
                state: {
                    **env,
                    "MNIST_PREDICTION_LOG": str(state == "on").lower(),
                    "MNIST_STORE_URL": store_url,
                }
                for state in STATES
            }
            servers, warm_ups = started(stack, args, body, envs)
            for index in range(args.repeat):
                for state, cell in one_round(args, servers, body, index).items():
                    rounds[state].append(cell)
                    print(json.dumps({"round": index, "log": state, **cell}), flush=True)
        store = open_store(store_url)
        logged = store.count_predictions() - args.prefill
        store.close()
    return rounds, warm_ups, logged


def check_logged(rounds: dict[str, list[dict]], warm_ups: dict[str, dict[str, int]], logged: int,
                 connections: int) -> None:  # fmt: skip
    """Every answer of the logging server is in the log, and none of the other's. `wrk` counts
    only the answers it received before its time ran out, so each run may leave up to its
    connections' worth of answers uncounted."""
    answered = warm_ups["on"]["answered"] + sum(cell["requests"] for cell in rounds["on"])
    uncounted = WARM_UP_CONNECTIONS * warm_ups["on"]["runs"] + connections * len(rounds["on"])
    if not answered <= logged <= answered + uncounted:
        raise RuntimeError(f"{logged} rows logged for {answered} answers: the measurement is void")


def bootstrap_ci(values: list[float], resamples: int = 10_000) -> list[float]:
    """A 95 % percentile-bootstrap interval for the median of `values` (fixed seed)."""
    draws = np.random.default_rng(0).choice(values, size=(resamples, len(values)))
    low, high = np.percentile(np.median(draws, axis=1), [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def summary(rounds: dict[str, list[dict]]) -> dict:
    """Medians per state, and the on/off ratios taken round by round."""

    def median(state: str, key: str) -> float:
        return round(statistics.median(cell[key] for cell in rounds[state]), 2)

    def ratios(key: str) -> list[float]:
        pairs = zip(rounds["on"], rounds["off"], strict=True)
        return [round(on[key] / off[key], 4) for on, off in pairs]

    keys = ("requests_per_s", "cpu_us_per_request", "p50_ms", "p99_ms")
    return {
        "median": {state: {key: median(state, key) for key in keys} for state in STATES},
        "errors": {state: sum(cell["errors"] for cell in rounds[state]) for state in STATES},
        "ratio_on_off": {
            key: {
                "per_round": ratios(key),
                "median": round(statistics.median(ratios(key)), 4),
                "median_95ci": bootstrap_ci(ratios(key)),
            }
            for key in ("requests_per_s", "cpu_us_per_request")
        },
    }


def log_cpu_us_per_prediction(prefill: int, records: int = 5_000) -> float:
    """CPU time this process spends per logged prediction, all threads: the record built and
    queued as a request does it, and the writer's share of batching and writing it to a SQLite
    log that holds `prefill` rows already. (`records` stays within the queue.)"""
    metrics = MonitoringMetrics(CollectorRegistry())
    probabilities = [0.001] * 9 + [0.991]
    pixels = np.zeros((28, 28), np.uint8)
    with tempfile.TemporaryDirectory() as scratch:
        settings = MonitoringSettings(MNIST_STORE_URL=f"sqlite:///{scratch}/predictions.db")
        prefilled(settings.store_url, prefill)
        log = PredictionLog(settings, metrics)
        log.store()  # opened (tables made) before the clock starts, as the API's first write
        log.start()
        started = time.process_time()
        for _ in range(records):
            log.submit(PredictionRecord(new_prediction_id(), "1", "upload", pixels, 9,
                                        probabilities, False))  # fmt: skip
        log.wait_until_written(timeout=120)
        spent = time.process_time() - started
        log.stop()
    if metrics.log_written._value.get() != records:
        raise RuntimeError("some predictions were dropped: the measurement is void")
    return spent / records * 1e6


def on_off_table(results: dict, heading: str) -> str:
    """Both servers' medians as a markdown table (`heading`: what is off and on), and the
    round-by-round on/off ratios as a sentence."""
    off, on = results["median"]["off"], results["median"]["on"]
    ratio = results["ratio_on_off"]
    rps, cpu = ratio["requests_per_s"], ratio["cpu_us_per_request"]
    rounds = ", ".join(f"{value:.3f}" for value in rps["per_round"])
    return (
        f"| {heading} | req/s (median) | CPU per request (µs, median) | p50 / p99 (ms) "
        "| errors |\n|---|---|---|---|---|\n"
        + "".join(
            f"| {state} | {cells['requests_per_s']:.0f} | {cells['cpu_us_per_request']:.0f} "
            f"| {cells['p50_ms']:.1f} / {cells['p99_ms']:.1f} | {results['errors'][state]} |\n"
            for state, cells in (("off", off), ("on", on))
        )
        + f"\nOn/off, round by round: req/s {rps['median']:.3f} (median, 95 % interval "
        f"{rps['median_95ci'][0]:.3f}-{rps['median_95ci'][1]:.3f}; rounds {rounds}); CPU per "
        f"request {cpu['median']:.3f} ({cpu['median_95ci'][0]:.3f}-{cpu['median_95ci'][1]:.3f})."
    )


def table(results: dict) -> str:
    """The comparison as a markdown table."""
    return (
        on_off_table(results, "prediction log")
        + f" CPU per logged prediction, in process: {results['log_cpu_us_per_prediction']:.0f} µs"
        f" (a log of {results['prefill_rows']:,} rows).\n"
    )


def on_off_arguments(
    description: str | None, seconds: float, repeat: int
) -> argparse.ArgumentParser:
    """The command line the off-and-on benchmarks share (this one and bench.shadow_overhead)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 short rounds, c=8")
    parser.add_argument("--workers", type=int, default=2, help="each server's worker processes")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs our API")
    parser.add_argument("--seconds", type=float, default=seconds, help="per measurement")
    parser.add_argument("--repeat", type=int, default=repeat, help="rounds (each: both servers)")
    parser.add_argument("--connections", type=int, default=32)
    return parser


def main() -> None:
    parser = on_off_arguments(__doc__, seconds=8, repeat=8)
    parser.add_argument(
        "--together",
        action="store_true",
        help="drive both servers at the same time (each with --connections) instead of in turn",
    )
    parser.add_argument(
        "--prefill", type=int, default=200_000, help="predictions in the log before it starts"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/logging_overhead.json"))
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeat, args.connections, args.prefill = 1, 2, 8, 1_000

    settings = ServingSettings()
    # No shadow scoring, whatever version holds the challenger alias: bench.shadow_overhead
    # measures that on its own.
    env = {"MLFLOW_TRACKING_URI": settings.tracking_uri, "MNIST_SHADOW_SAMPLE_RATE": "0"}
    rounds, warm_ups, logged = paired_rounds(args, payloads()["png28"], env)
    check_logged(rounds, warm_ups, logged, args.connections)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "model": str(settings.model_path) if settings.model_path else settings.model_uri,
        "workers": args.workers,
        "connections": args.connections,
        "design": "together" if args.together else "in turn",
        "seconds_per_cell": args.seconds,
        "repeat": args.repeat,
        **summary(rounds),
        "warm_up_requests": warm_ups,
        "rows_logged": logged,
        "prefill_rows": args.prefill,
        "log_cpu_us_per_prediction": round(log_cpu_us_per_prediction(args.prefill), 1),
        "rounds": rounds,
    }
    save(results, table(results), args.out)


if __name__ == "__main__":
    main()
