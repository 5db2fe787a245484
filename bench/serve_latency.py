"""Benchmark: /predict latency of the running production model, in process (no network).

    python bench/serve_latency.py --requests 200

Needs a model with the `production` alias in the configured MLflow store (`dvc repro` first).
Sends the three Paint-drawn seed pictures (1152×648 RGBA PNGs) in turn; prints median and p95.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from fastapi.testclient import TestClient

from serving.app import create_app

SEED_IMAGES = sorted(Path("tests/data").glob("num_*.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_latency.json"))
    args = parser.parse_args()
    payloads = [(path.name, path.read_bytes()) for path in SEED_IMAGES]
    with TestClient(create_app()) as client:
        if client.get("/ready").status_code != 200:
            raise SystemExit(f"No production model: {client.get('/ready').json()['reason']}")
        latencies, answers = [], {}
        for index in range(args.requests):
            name, data = payloads[index % len(payloads)]
            started = time.perf_counter()
            response = client.post("/predict", files={"file": (name, data, "image/png")})
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            answers[name] = response.json()["digit"]
    latencies.sort()
    summary = {
        "requests": args.requests,
        "median_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "answers": answers,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
