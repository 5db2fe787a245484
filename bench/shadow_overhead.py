"""Benchmark: what scoring the challenger in the shadow costs the API, off and on side by side.

    python -m bench.shadow_overhead --repeat 20 --seconds 6     # in turn, ~6 minutes
    python -m bench.shadow_overhead --quick                     # a smoke run

Two servers (`python -m serving --workers 2`) start together on a private registry of their own
(a SQLite file in a temporary directory) whose `production` and `challenger` aliases hold the
same ONNX model (`--model`, else the configured registry's production version): one with
`MNIST_SHADOW_SAMPLE_RATE=0` (the challenger is not even loaded), one with `--sample-rate` (the
API's default, 0.5, unless given; 1: every answer scored again). Both log their predictions, as
a deployment does. Each round drives `/predict` with a 28×28 PNG (the cheapest request, so the
shadow's largest share) from `wrk` at `--connections` on both servers, one after the other, the
order swapped every round; req/s and the servers' CPU per request as `bench.logging_overhead`
measures them (medians, round-by-round on/off ratios and their bootstrap interval). The run
fails if the shadowing server did not compare what it was sent (at its sample rate; dropped work
aside, which is recorded) or the other compared anything.
It also times, in process, the CPU that one shadowed answer costs (all threads: the job queued
as a request queues it, the challenger's batched inference, the counters, its answer written to
the log): a figure a busy machine disturbs less than req/s.

Needs `wrk` (Debian's package). Both servers listen on 127.0.0.1 only and are stopped at the end.
Writes `bench/results/shadow_overhead.json` and `.md` (or `--out`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bench.loadgen import Server, wrk
from bench.logging_overhead import (
    STATES,
    on_off_arguments,
    on_off_table,
    one_round,
    started,
    summary,
)
from bench.machine import cpu_model
from bench.report import save
from bench.serve_throughput import payloads
from mnist_core.classifier import DigitClassifier, default_threads
from monitoring.model_metrics import MonitoringMetrics
from monitoring.records import PredictionRecord, new_prediction_id
from monitoring.writer import PredictionLog
from serving.model_store import ServedModel, read_onnx_model
from serving.settings import ServingSettings
from serving.shadow import ShadowJob, ShadowScorer

MODEL = "mnist-cnn"
MLMODEL = "flavors:\n  onnx:\n    data: model.onnx\n"  # what `read_onnx_model` reads of it


def private_registry(onnx_model: bytes, root: Path) -> str:
    """A SQLite registry in `root` whose versions 1 (`production`) and 2 (`challenger`) are
    `onnx_model`; its tracking URI."""
    directory = root / "model"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(onnx_model)
    (directory / "MLmodel").write_text(MLMODEL)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for alias in ("production", "challenger"):
        version = client.create_model_version(MODEL, directory.as_uri())
        client.set_registered_model_alias(MODEL, alias, version.version)
    return uri


def shadow_counts(server: Server) -> dict[str, float]:
    """The server's shadow counters, summed over its workers: comparisons, dropped by reason."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mnist_shadow_comparisons_total":
                counts["compared"] = counts.get("compared", 0) + sample.value
            elif sample.name == "mnist_shadow_dropped_total":
                counts[f"dropped_{sample.labels['reason']}"] = sample.value
    return counts


# Below a sample rate of 1 the shadow compares a random share of the answers: thousands of them
# in a round, so a count this far under its expectation means workers that do not shadow.
SAMPLED_SHORTFALL = 0.9


def expected(answered: float, sample_rate: float) -> float:
    """How many of `answered` answers the shadow must at least have compared (or dropped)."""
    return answered if sample_rate == 1 else SAMPLED_SHORTFALL * sample_rate * answered


def shadowing(
    server: Server, body: tuple[bytes, str], sample_rate: float, timeout: float = 60
) -> None:
    """Wait until every worker scores in the shadow: a 2 s run whose answers were all compared
    at the sample rate (the challenger loads after production, in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        before = shadow_counts(server).get("compared", 0)
        cell = wrk(server.url + "/predict", *body, connections=8, seconds=2)
        time.sleep(0.5)  # the shadow thread's last batch
        if shadow_counts(server).get("compared", 0) - before >= expected(
            cell["requests"], sample_rate
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.url} does not score its answers in the shadow")


def paired_rounds(
    args: argparse.Namespace, body: tuple[bytes, str], tracking_uri: str, scratch: Path
) -> tuple[dict[str, list[dict]], dict[str, dict[str, float]], dict[str, list[float]]]:
    """`--repeat` rounds of both servers; each one's shadow counters over them; and each one's
    workers' resident memory at the end."""
    rounds: dict[str, list[dict]] = {state: [] for state in STATES}
    with contextlib.ExitStack() as stack:
        envs = {
            state: {
                "MLFLOW_TRACKING_URI": tracking_uri,
                "MNIST_STORE_URL": f"sqlite:///{scratch / f'predictions-{state}.db'}",
                "MNIST_SHADOW_SAMPLE_RATE": str(args.sample_rate if state == "on" else 0),
            }
            for state in STATES
        }
        servers, _ = started(stack, args, body, envs)
        shadowing(servers["on"], body, args.sample_rate)
        before = {state: shadow_counts(server) for state, server in servers.items()}
        for index in range(args.repeat):
            for state, cell in one_round(args, servers, body, index).items():
                rounds[state].append(cell)
                print(json.dumps({"round": index, "shadow": state, **cell}), flush=True)
        time.sleep(1)  # the last shadow batches
        counts = {
            state: {
                key: value - before[state].get(key, 0)
                for key, value in shadow_counts(server).items()
            }
            for state, server in servers.items()
        }
        # The challenger's second ONNX Runtime session and registry client, per worker.
        rss = {state: server.worker_rss_mib() for state, server in servers.items()}
    return rounds, counts, rss


class _Loaded:
    """What the scorer reads of a `ModelStore`: the challenger loaded now."""

    def __init__(self, served: ServedModel) -> None:
        self.current = served

    def close(self) -> None:
        pass


def shadow_cpu_us_per_answer(onnx_model: bytes, workers: int, answers: int = 5_000) -> float:
    """CPU time this process spends per shadowed answer, all threads: the job queued, scored in
    the challenger's batches, counted, and its answer written to a SQLite log (whose
    predictions are written before the clock starts)."""
    classifier = DigitClassifier(onnx_model, threads=default_threads(workers))
    challenger = ServedModel(MODEL, "challenger", "2", None, "bench", classifier)
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 12:16] = 255
    with tempfile.TemporaryDirectory() as scratch:
        settings = ServingSettings(
            MNIST_STORE_URL=f"sqlite:///{scratch}/predictions.db",
            MNIST_SHADOW_QUEUE_SIZE=answers,
            MNIST_SHADOW_SAMPLE_RATE=1,  # every answer: the cost of one
        )
        metrics = MonitoringMetrics(CollectorRegistry())
        log = PredictionLog(settings, metrics)
        log.start()
        records = [PredictionRecord(new_prediction_id(), "1", "upload", pixels, 1, [0.1] * 10,
                                    False) for _ in range(answers)]  # fmt: skip
        for record in records:
            log.submit(record)
        log.wait_until_written(timeout=120)
        shadow = ShadowScorer(settings, _Loaded(challenger), metrics.shadow, log)  # type: ignore[arg-type]
        started = time.process_time()
        shadow.start()
        for record in records:
            shadow.submit(ShadowJob(record.id, pixels, "1", 1, False, logged=True))
        shadow.wait_until_scored(timeout=120)
        log.wait_until_written(timeout=120)
        spent = time.process_time() - started
        shadow.stop()
        log.stop()
    compared = sum(metrics.shadow.comparisons.labels(o)._value.get() for o in ("agree", "disagree"))
    if compared != answers:
        raise RuntimeError("some shadow work was dropped: the measurement is void")
    return spent / answers * 1e6


def check_compared(rounds: dict[str, list[dict]], counts: dict[str, dict[str, float]],
                   sample_rate: float) -> None:  # fmt: skip
    """The shadowing server compared what it answered (at its sample rate; dropped work aside),
    the other nothing."""
    if counts["off"].get("compared", 0):
        raise RuntimeError("the server without a shadow compared answers: the measurement is void")
    answered = sum(cell["requests"] for cell in rounds["on"])
    done = counts["on"].get("compared", 0) + sum(
        value for key, value in counts["on"].items() if key.startswith("dropped_")
    )
    if done < expected(answered, sample_rate):
        raise RuntimeError(f"{done:.0f} of {answered} answers shadowed: the measurement is void")


def table(results: dict) -> str:
    """The comparison as a markdown table."""
    counts = results["shadow_counts"]["on"]
    dropped = ", ".join(
        f"{key.removeprefix('dropped_')} {value:,.0f}"
        for key, value in counts.items()
        if key.startswith("dropped_")
    )
    rss = results["rss_mib_per_worker"]
    return (
        on_off_table(results, "shadow")
        + f" Compared in the shadow: {counts.get('compared', 0):,.0f} answers at sample rate "
        f"{results['sample_rate']:g} (dropped: {dropped}). CPU per shadowed answer, in process: "
        f"{results['shadow_cpu_us_per_answer']:.0f} µs. Worker memory (RSS, MiB) off / on: "
        f"{rss['off']} / {rss['on']}.\n"
    )


def main() -> None:
    parser = on_off_arguments(__doc__, seconds=6, repeat=20)
    parser.add_argument("--model", type=Path, help="an ONNX file (default: the production one)")
    parser.add_argument(
        "--sample-rate",
        type=float,
        default=ServingSettings.model_fields["shadow_sample_rate"].default,
        help="the shadowing server's (default: the API's default)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/shadow_overhead.json"))
    args = parser.parse_args()
    args.together = False  # `one_round` of bench.logging_overhead: in turn
    if args.quick:
        args.seconds, args.repeat, args.connections = 1, 2, 8

    settings = ServingSettings()
    if args.model is not None:
        onnx_model, model = args.model.read_bytes(), str(args.model)
    else:
        client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
        version = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
        onnx_model = read_onnx_model(settings.model_name, version.version, settings.tracking_uri)
        model = f"{settings.model_uri} = version {version.version}"
    with tempfile.TemporaryDirectory() as scratch:
        tracking_uri = private_registry(onnx_model, Path(scratch))
        rounds, counts, rss = paired_rounds(args, payloads()["png28"], tracking_uri, Path(scratch))
    check_compared(rounds, counts, args.sample_rate)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "model": f"{model}, as production and as challenger",
        "precision": "fp32 (ONNX Runtime, CPU)",
        "workers": args.workers,  # processes of each server
        "inference_threads_per_worker": default_threads(args.workers),
        "connections": args.connections,
        "design": "in turn, the order swapped every round",
        "sample_rate": args.sample_rate,
        "seconds_per_cell": args.seconds,
        "repeat": args.repeat,
        **summary(rounds),
        "shadow_counts": counts,
        "rss_mib_per_worker": rss,
        "shadow_cpu_us_per_answer": round(shadow_cpu_us_per_answer(onnx_model, args.workers), 1),
        "rounds": rounds,
    }
    save(results, table(results), args.out)


if __name__ == "__main__":
    main()
