"""Benchmark: our API against `mlflow models serve`, same registered ONNX version, side by side.

    python -m bench.serve_throughput --python .venv-serve/bin/python   # 3 rounds, ~11 minutes
    python -m bench.serve_throughput --quick                           # a smoke run

Needs `wrk` (Debian's package) and a `production` version in the configured MLflow registry
(`dvc repro` first). Both servers listen on 127.0.0.1 only and are stopped at the end. Ours gets
multipart PNG uploads (a 28×28 digit, a 280×280 canvas drawing, a 1152×648 Paint picture), theirs
the same 28×28 digit as a JSON tensor. Writes `bench/results/serve_throughput.json`, a markdown
table (`.md`) and a plot (`.png`) beside it (the prediction log's cost: `bench.logging_overhead`).
The machines are noisy: every number is the median
of `--repeat` rounds, each round measuring both servers one after the other.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image, ImageDraw

from bench.loadgen import free_port, multipart, running, wrk
from bench.page_canvas import PAGE_CANVAS, STROKE
from bench.report import markdown_table, median_of_rounds, plot, save
from mnist_core.classifier import DigitClassifier, default_threads
from mnist_core.imaging import to_mnist
from serving.decode import decode_image
from serving.model_store import read_onnx_model
from serving.settings import ServingSettings

PAINT_PICTURE = Path("tests/data/num_7.png")
BATCH_FILES = 16


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def paint_digit() -> np.ndarray:
    """The Paint picture's 7 as the API sees it: 28×28, white on black."""
    with Image.open(PAINT_PICTURE) as picture:
        return to_mnist(picture)


def pictures() -> dict[str, bytes]:
    """The picture files the benchmarks upload, each a drawn 7: a 28×28 PNG, what the web page's
    canvas sends (drawn with the mouse on the page in Chromium, 280×280 RGBA), the same drawn by
    Pillow (black 18 px strokes on white, no anti-aliasing: the earlier benchmarks' canvas) and
    the Paint picture."""
    canvas = Image.new("RGBA", (280, 280), "white")
    ImageDraw.Draw(canvas).line(STROKE, fill="black", width=18, joint="curve")
    return {
        "png28": png(Image.fromarray(paint_digit())),
        "canvas": PAGE_CANVAS.read_bytes(),
        "png280": png(canvas),
        "paint": PAINT_PICTURE.read_bytes(),
    }


def payloads() -> dict[str, tuple[bytes, str]]:
    """The request bodies: each picture as a multipart upload, 16 small ones as a batch, and the
    28×28 digit as the JSON tensor `mlflow models serve` takes."""
    files = pictures()
    tensor = {"inputs": paint_digit().reshape(1, 1, 28, 28).astype(float).tolist()}
    return {
        "png28": multipart([("file", "digit.png", files["png28"])]),
        "canvas": multipart([("file", "canvas.png", files["canvas"])]),
        "png280": multipart([("file", "canvas.png", files["png280"])]),
        "paint": multipart([("file", PAINT_PICTURE.name, files["paint"])]),
        "batch16": multipart([("files", f"{i}.png", files["png28"]) for i in range(BATCH_FILES)]),
        "json28": (json.dumps(tensor).encode(), "application/json"),
    }


def mlflow_serve_command(model_uri: str, port: int, workers: int) -> list[str]:
    """`mlflow models serve` of `model_uri` on 127.0.0.1:`port`, by this interpreter's `mlflow`
    (whether or not its bin is on PATH)."""
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    command = [mlflow_cli, "models", "serve", "-m", model_uri, "--env-manager", "local"]
    return [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]


def bare_session_images_per_s(onnx_model: bytes, pngs: list[bytes], seconds: float) -> float:
    """Decode, preprocess and classify `pngs` as one batch, in process, for `seconds`: img/s."""
    classifier = DigitClassifier(onnx_model, threads=default_threads())
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        pixels = np.stack([to_mnist(decode_image(data, 25_000_000)) for data in pngs])
        classifier.predict_proba(pixels)
        images += len(pngs)
    return images / (time.perf_counter() - started)


def sweep(url: str, body: tuple[bytes, str], concurrency: list[int], seconds: float) -> list[dict]:
    wrk(url, *body, connections=8, seconds=1)  # warm-up
    return [wrk(url, *body, connections=c, seconds=seconds) for c in concurrency]


def one_round(
    args: argparse.Namespace,
    bodies: dict[str, tuple[bytes, str]],
    concurrency: list[int],
    seconds: float,
    env: dict[str, str],
    version: str,
) -> dict:
    """Every measurement once: our API (1 worker for its start-up, then the workers asked for),
    `mlflow models serve`, and the bare ONNX session."""
    settings = ServingSettings()
    results: dict = {"ours": {}, "mlflow": {}}
    full = ["png28", "canvas", "png280", "paint", "batch16"]
    ours_payloads = ["png28", "batch16"] if args.quick else full
    for workers in sorted({1, args.workers}):
        port = free_port()
        command = [args.python, "-m", "serving", "--port", str(port), "--workers", str(workers)]
        with running(command, "/ready", port, env) as server:
            entry = {"seconds_to_ready": round(server.seconds_to_ready, 2), "cells": {}}
            if workers == args.workers:
                for name in ours_payloads:
                    path = "/predict/batch" if name == "batch16" else "/predict"
                    entry["cells"][name] = sweep(
                        server.url + path, bodies[name], concurrency, seconds
                    )
            entry["rss_mib_per_worker"] = server.worker_rss_mib()
            results["ours"][str(workers)] = entry
            print(json.dumps({"ours": workers, **entry}), flush=True)

    model_uri = f"models:/{settings.model_name}@{settings.model_alias}"
    for workers in [1] if args.quick else [1, args.workers]:
        port = free_port()
        command = mlflow_serve_command(model_uri, port, workers)
        with running(command, "/ping", port, env, timeout=180) as server:
            cells = sweep(server.url + "/invocations", bodies["json28"], concurrency, seconds)
            entry = {
                "seconds_to_ready": round(server.seconds_to_ready, 2),
                "cells": {"json28": cells},
                "rss_mib_per_worker": server.worker_rss_mib(),
            }
            results["mlflow"][str(workers)] = entry
            print(json.dumps({"mlflow": workers, **entry}), flush=True)

    small_pngs = [pictures()["png28"]] * BATCH_FILES
    onnx_model = read_onnx_model(settings.model_name, version, settings.tracking_uri)
    results["bare_session_batch16_images_per_s"] = round(
        bare_session_images_per_s(onnx_model, small_pngs, 2 if args.quick else 5), 1
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny and fast")
    parser.add_argument("--workers", type=int, default=2, help="our API's worker processes")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs our API, e.g. that of a `pip install .[serve]` environment",
    )
    parser.add_argument("--seconds", type=float, default=8, help="per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the tables show medians")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_throughput.json"))
    args = parser.parse_args()
    concurrency = [1, 8] if args.quick else [1, 8, 32, 64]
    seconds = 1 if args.quick else args.seconds
    if args.quick:
        args.repeat = 1

    settings = ServingSettings()
    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, settings.model_alias).version
    # No shadow scoring, whatever version holds the challenger alias: bench.shadow_overhead
    # measures that on its own.
    env = {"MLFLOW_TRACKING_URI": settings.tracking_uri, "MNIST_SHADOW_SAMPLE_RATE": "0"}
    bodies = payloads()
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {default_threads()} cores",
        "model": f"{settings.model_name} version {version}",
        "our_python": args.python,
        "seconds_per_cell": seconds,
        "repeat": args.repeat,
    }

    rounds = [
        one_round(args, bodies, concurrency, seconds, env, version) for _ in range(args.repeat)
    ]
    results |= median_of_rounds(rounds)
    results["rounds"] = rounds

    plot(results, args.workers, args.out.with_suffix(".png"))
    save(results, markdown_table(results, args.workers), args.out)


if __name__ == "__main__":
    main()
