"""Benchmark: what decoding and `to_mnist` cost per picture, in process, against an older copy.

    git archive a8a8eb1~1 | (mkdir -p /tmp/before && tar -x -C /tmp/before)   # an older version
    python -m bench.preprocess_speed --baseline /tmp/before

For each request body of the serving benchmark (a 28×28 PNG, the page's 280×280 canvas PNG as
Chromium and as Pillow draw it, the 1152×648 Paint picture), the median over `--repeat` rounds of
the time per call of Pillow's decoding, of libspng's where it gives the same pixels
(`serving.decode.decode_image`; the API uses it for small PNGs only), of this checkout's
`to_mnist` and, with `--baseline`,
of the `to_mnist` in that folder's `mnist_core/imaging.py`, the two taken in turn in each round
and checked to give the same pixels. One thread, nothing else in the process. Writes
`bench/results/preprocess_speed.json` and a markdown table (`.md`) beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from bench.machine import cpu_model
from bench.report import save
from bench.serve_throughput import pictures
from mnist_core.imaging import to_mnist
from serving.decode import decode_image

MAX_PIXELS = 25_000_000


def load_baseline(folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "baseline_imaging", folder / "mnist_core" / "imaging.py"
    )
    assert spec and spec.loader, f"no mnist_core/imaging.py in {folder}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def microseconds(call: Callable[[], object], number: int) -> float:
    return timeit.timeit(call, number=number) / number * 1e6


def pillow_decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image


def timed(data: bytes, image: Image.Image, baseline: ModuleType | None, repeat: int) -> dict:
    """Median µs per call over `repeat` rounds: decoding `data`, and `to_mnist` of its `image`
    here and in `baseline` (in turn in each round, checked to agree)."""
    number = max(20, int(0.2 / (microseconds(lambda: to_mnist(image), 5) / 1e6)))
    rounds: dict[str, list[float]] = {
        "pillow_decode": [], "decode": [], "to_mnist": [], "baseline": []
    }  # fmt: skip
    for _ in range(repeat):
        rounds["pillow_decode"].append(microseconds(lambda: pillow_decode(data), number))
        rounds["decode"].append(microseconds(lambda: decode_image(data, MAX_PIXELS), number))
        rounds["to_mnist"].append(microseconds(lambda: to_mnist(image), number))
        if baseline is not None:
            assert np.array_equal(baseline.to_mnist(image), to_mnist(image))
            rounds["baseline"].append(microseconds(lambda: baseline.to_mnist(image), number))
    return {key: statistics.median(values) for key, values in rounds.items() if values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, help="a folder holding an older mnist_core/")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench/results/preprocess_speed.json"))
    args = parser.parse_args()
    baseline = load_baseline(args.baseline) if args.baseline else None

    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "baseline": str(args.baseline) if args.baseline else None,
        "repeat": args.repeat,
        "pictures": {},
    }
    lines = [
        "| picture | Pillow's decode µs | API's decode µs | to_mnist µs | baseline to_mnist µs "
        "| ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, data in pictures().items():
        image = decode_image(data, MAX_PIXELS)
        medians = timed(data, image, baseline, args.repeat)
        mode = Image.open(io.BytesIO(data)).mode  # the file's (an opaque canvas decodes to RGBX)
        results["pictures"][name] = {"size": image.size, "mode": mode, **medians}
        old = medians.get("baseline")
        before, ratio = (
            ("—", "—") if old is None else (f"{old:.0f}", f"{medians['to_mnist'] / old:.2f}")
        )
        lines.append(
            f"| {name} ({image.width}×{image.height} {mode}) "
            f"| {medians['pillow_decode']:.0f} | {medians['decode']:.0f} "
            f"| {medians['to_mnist']:.0f} | {before} | {ratio} |"
        )
    save(results, "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
