"""Benchmark: training time and test accuracy of the default parameters, over several seeds.

    python bench/train_accuracy.py --seeds 1 2 3 [-S train.epochs=10 ...]

Needs `dvc repro preprocess` first. Trains exactly as the `train` stage does (no MLflow logging),
then scores the best epoch on the test set. Prints a Markdown table and the medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from pipeline.data import load_split
from pipeline.model import pick_device
from pipeline.params import load_params
from pipeline.training import evaluate_logits, fit, use_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("-S", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_accuracy.json"))
    args = parser.parse_args()

    base = load_params(Path("params.yaml"), args.overrides).train
    device = pick_device()
    train, val = load_split(base.data_dir, "train"), load_split(base.data_dir, "val")
    test = load_split(base.data_dir, "test")
    rows = []
    for seed in args.seeds:
        params = base.model_copy(update={"seed": seed})
        started = time.perf_counter()
        result = fit(params, train, val, device)
        seconds = time.perf_counter() - started
        _, accuracy = evaluate_logits(result.model, *test)
        rows.append(
            {
                "seed": seed,
                "test_accuracy": accuracy,
                "best_epoch": result.best.epoch,
                "val_accuracy": result.best.val_accuracy,
                "train_seconds": seconds,
                "seconds_per_epoch": statistics.median(r.seconds for r in result.history),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    summary = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "bf16": use_bf16(base, device),
        "overrides": args.overrides,
        "median_test_accuracy": statistics.median(r["test_accuracy"] for r in rows),
        "median_train_seconds": statistics.median(r["train_seconds"] for r in rows),
        "median_seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in rows),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("\n| seed | test accuracy | best epoch | train s | s/epoch |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['test_accuracy']:.4f} | {r['best_epoch']} | "
            f"{r['train_seconds']:.0f} | {r['seconds_per_epoch']:.1f} |"
        )
    print(
        f"\nmedian: test accuracy {summary['median_test_accuracy']:.4f}, "
        f"{summary['median_train_seconds']:.0f} s training, "
        f"{summary['median_seconds_per_epoch']:.1f} s/epoch, "
        f"peak RSS {summary['peak_rss_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
