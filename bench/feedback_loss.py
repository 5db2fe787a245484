"""Benchmark: feedback sent the moment its prediction is answered, through the default workers.

    python -m bench.feedback_loss                    # 200 pairs from 8 clients
    python -m bench.feedback_loss --store-url postgresql+psycopg://user:pw@127.0.0.1/predictions
    MNIST_MODEL_PATH=model.onnx python -m bench.feedback_loss --pairs 40 --clients 4

Starts `python -m serving` (the default number of workers, a fresh SQLite store in a temporary
directory, or the prediction store at `--store-url`) on 127.0.0.1, then each client posts a
picture to `/predict` and, as soon as the answer comes, its `prediction_id` to `/feedback`, each
request on a new connection (so the kernel spreads them over the workers). Prints how many
feedbacks were answered 201 and how many were lost (404: "no logged prediction has this id"),
with the feedback latencies, as JSON. The server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.loadgen import free_port, post_picture, running

SEVEN = Path("tests/data/num_7.png").read_bytes()


def post_json(url: str, body: dict, timeout: float = 30) -> int:
    """POST `body` as JSON; the status code (an error status is returned, not raised)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def pair(url: str) -> tuple[int, float]:
    """One prediction, then its feedback at once: the feedback's status and seconds."""
    answer = post_picture(f"{url}/predict", "7.png", SEVEN)
    started = time.perf_counter()
    status = post_json(f"{url}/feedback", {"prediction_id": answer["prediction_id"], "label": "7"})
    return status, time.perf_counter() - started


def measure(url: str, pairs: int, clients: int) -> dict:
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(lambda _: pair(url), range(pairs)))
    statuses = Counter(status for status, _ in outcomes)
    seconds = np.array([elapsed for _, elapsed in outcomes])
    return {
        "pairs": pairs,
        "clients": clients,
        "statuses": dict(sorted(statuses.items())),
        "lost": statuses.get(404, 0),
        "feedback_p50_ms": round(float(np.percentile(seconds, 50)) * 1000, 1),
        "feedback_p99_ms": round(float(np.percentile(seconds, 99)) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--python", default=sys.executable, help="interpreter of the API")
    parser.add_argument("--store-url", help="the prediction store (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="feedback-loss-") as scratch:
        port = free_port()
        command = [args.python, "-m", "serving", "--port", str(port)]
        # Every pair's feedback within the budget of one client (they all come from 127.0.0.1).
        env = {
            "MNIST_STORE_URL": args.store_url or f"sqlite:///{Path(scratch) / 'predictions.db'}",
            "MNIST_FEEDBACK_PER_HOUR": str(args.pairs + 1),
        }
        with running(command, "/ready", port, env, timeout=180) as server:
            print(json.dumps(measure(server.url, args.pairs, args.clients)), flush=True)


if __name__ == "__main__":
    main()
