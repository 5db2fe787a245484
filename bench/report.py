"""The serving benchmark's results as a markdown table and a plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {
    "png28": "ours, /predict, 28×28 PNG",
    "canvas": "ours, /predict, the page's canvas (Chromium's 280×280 PNG)",
    "png280": "ours, /predict, 280×280 PNG (drawn by Pillow)",
    "paint": "ours, /predict, 1152×648 Paint PNG",
    "batch16": "ours, /predict/batch, 16 × 28×28 PNG (req/s)",
    "json28": "`mlflow models serve`, JSON tensor 1×1×28×28",
}


def save(results: dict, markdown: str, out: Path) -> None:
    """A benchmark's results as JSON at `out`, their table as markdown beside it (`.md`), and
    the table printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)


def paired_row(label: str, cells: list[dict], bases: list[dict]) -> str:
    """A markdown row of paired rounds: the median req/s and p99 of `cells` (one `wrk` summary a
    round), each round's ratio of req/s to the same round's `bases`, and their median."""
    ratios = [cell["requests_per_s"] / base["requests_per_s"] for cell, base in
              zip(cells, bases, strict=True)]  # fmt: skip
    rate = statistics.median(cell["requests_per_s"] for cell in cells)
    p99 = statistics.median(cell["p99_ms"] for cell in cells)
    return (
        f"| {label} | {rate:,.0f} | {p99:.0f} | {' / '.join(f'{x:.2f}' for x in ratios)} "
        f"| {statistics.median(ratios):.2f} |"
    )


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def median_of_rounds(rounds: list[dict]) -> dict:
    """One result per measurement: the median over rounds (requests and errors summed, memory
    the largest seen)."""
    merged: dict = {
        "bare_session_batch16_images_per_s": _median(
            [r["bare_session_batch16_images_per_s"] for r in rounds]
        )
    }
    for side in ("ours", "mlflow"):
        merged[side] = {}
        for workers, first in rounds[0][side].items():
            entries = [r[side][workers] for r in rounds]
            cells = {
                name: [
                    {
                        "connections": cell["connections"],
                        "requests": sum(e["cells"][name][i]["requests"] for e in entries),
                        "errors": sum(e["cells"][name][i]["errors"] for e in entries),
                        **{
                            key: _median([e["cells"][name][i][key] for e in entries])
                            for key in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms")
                        },
                    }
                    for i, cell in enumerate(sweep)
                ]
                for name, sweep in first["cells"].items()
            }
            merged[side][workers] = {
                "seconds_to_ready": _median([e["seconds_to_ready"] for e in entries]),
                "rss_mib_per_worker": max(e["rss_mib_per_worker"] for e in entries),
                "cells": cells,
            }
    return merged


def _rows(results: dict, workers: int) -> list[tuple[str, int, list[dict]]]:
    rows = [
        (LABELS[name], workers, cells)
        for name, cells in results["ours"][str(workers)]["cells"].items()
    ]
    rows += [(LABELS["json28"], int(w), e["cells"]["json28"]) for w, e in results["mlflow"].items()]
    return rows


def _best_mlflow(results: dict, connections: int) -> float:
    return max(
        cell["requests_per_s"]
        for entry in results["mlflow"].values()
        for cell in entry["cells"]["json28"]
        if cell["connections"] == connections
    )


def markdown_table(results: dict, workers: int) -> str:
    concurrency = [cell["connections"] for cell in results["mlflow"]["1"]["cells"]["json28"]]
    head = "| server, request | workers | " + " | ".join(
        f"c={c} req/s | c={c} p50 / p99 ms" for c in concurrency
    )
    lines = [head + " | errors |", "|" + "---|" * (3 + 2 * len(concurrency))]
    for label, count, cells in _rows(results, workers):
        values = " | ".join(
            f"{cell['requests_per_s']:,.0f} | {cell['p50_ms']:.1f} / {cell['p99_ms']:.1f}"
            for cell in cells
        )
        lines.append(f"| {label} | {count} | {values} | {sum(c['errors'] for c in cells)} |")
    ours = results["ours"][str(workers)]["cells"]
    lines.append("")
    for c in concurrency:
        best = _best_mlflow(results, c)
        ratios = ", ".join(
            f"{name} {cell['requests_per_s'] / best:.2f}×"
            for name, cells in ours.items()
            for cell in cells
            if cell["connections"] == c and name != "batch16"
        )
        lines.append(
            f"- c={c}: req/s against the better `mlflow models serve` ({best:,.0f}): {ratios}"
        )
    batch = max(cell["requests_per_s"] for cell in ours.get("batch16", [{"requests_per_s": 0}]))
    bare = results["bare_session_batch16_images_per_s"]
    lines.append(
        f"- /predict/batch: {batch * 16:,.0f} img/s at best; the bare ONNX session with the same "
        f"decoding and preprocessing, in process: {bare:,.0f} img/s ({batch * 16 / bare:.0%})"
    )
    for side in ("ours", "mlflow"):
        for count, entry in results[side].items():
            lines.append(
                f"- {side}, {count} worker(s): ready {entry['seconds_to_ready']:.2f} s after "
                f"start; RSS per worker {entry['rss_mib_per_worker']} MiB"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, workers: int, path: Path) -> None:
    figure, (throughput, tail) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, count, cells in _rows(results, workers):
        x = [cell["connections"] for cell in cells]
        name = f"{label}, {count} worker{'s' if count > 1 else ''}"
        throughput.plot(x, [cell["requests_per_s"] for cell in cells], marker="o", label=name)
        tail.plot(x, [cell["p99_ms"] for cell in cells], marker="o", label=name)
    for axes, title in ((throughput, "requests per second"), (tail, "p99 latency (ms)")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("concurrent connections")
        axes.set_title(title)
        axes.grid(alpha=0.3)
    tail.set_yscale("log")
    throughput.legend(fontsize=7)
    figure.suptitle(
        f"{results['model']} on {results['machine']}, {results['date'][:10]}, "
        f"median of {results['repeat']} rounds"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
