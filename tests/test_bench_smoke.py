"""The benchmarks at smoke size: each starts its servers on loopback, drives them with wrk,
writes its results and stops them. The full runs are in bench/README.md and RELIABILITY.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from serving.model_store import read_onnx_model
from tests.conftest import PROJECT_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("wrk") is None and not os.environ.get("CI"),
        reason="wrk is not installed (apt-get install wrk); .ci/run installs it",
    ),
]


def run_benchmark(module: str, args: list[str], env: dict[str, str], out: Path) -> dict:
    """`python -m <module> <args> --out <out>` in the project folder; its JSON results."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args, "--out", str(out)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text())


def test_serve_throughput_quick_run(trained_registry: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    results = run_benchmark("bench.serve_throughput", ["--quick"], trained_registry, out)
    ours = results["ours"]["2"]
    cells = [cell for cells in ours["cells"].values() for cell in cells]
    cells += results["mlflow"]["1"]["cells"]["json28"]
    assert cells and all(cell["requests"] > 0 and cell["errors"] == 0 for cell in cells)
    assert all(rss > 0 for rss in ours["rss_mib_per_worker"])
    assert results["bare_session_batch16_images_per_s"] > 0
    assert "| ours, /predict, 28×28 PNG | 2 |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 0


def test_serve_paired_one_short_round(trained_registry: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "paired.json"
    args = ["--rounds", "1", "--seconds", "1", "--workers", "1", "--connections", "4"]
    results = run_benchmark("bench.serve_paired", args, trained_registry, out)
    (measured,) = results["rounds"]
    assert set(measured) == {"canvas", "png280", "png28", "json28"}
    assert all(cell["requests"] > 0 and cell["errors"] == 0 for cell in measured.values())
    ratio = measured["canvas"]["requests_per_s"] / measured["json28"]["requests_per_s"]
    row = next(line for line in out.with_suffix(".md").read_text().splitlines() if "canvas" in line)
    assert row.endswith(f"| {ratio:.2f} |")


def test_logging_overhead_quick_run(trained_registry: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "logging.json"
    results = run_benchmark("bench.logging_overhead", ["--quick"], trained_registry, out)
    rounds = results["rounds"]
    assert all(
        cell["requests"] > 0 and cell["errors"] == 0 and cell["cpu_us_per_request"] > 0
        for state in ("off", "on")
        for cell in rounds[state]
    ), rounds
    # The benchmark checks itself that the logging server logged every answer and the other
    # none (it fails otherwise); the log held `--prefill` rows before.
    assert results["rows_logged"] >= sum(cell["requests"] for cell in rounds["on"]) > 0
    assert results["log_cpu_us_per_prediction"] > 0
    assert len(results["ratio_on_off"]["requests_per_s"]["per_round"]) == 2
    assert "| on |" in out.with_suffix(".md").read_text()


def test_shadow_overhead_quick_run(trained_registry: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "shadow.json"
    results = run_benchmark(
        "bench.shadow_overhead", ["--quick", "--sample-rate", "1"], trained_registry, out
    )
    rounds = results["rounds"]
    assert all(
        cell["requests"] > 0 and cell["errors"] == 0 for state in ("off", "on")
        for cell in rounds[state]
    ), rounds  # fmt: skip
    # The benchmark checks itself that the shadowing server compared every answer it gave and
    # the other none (it fails otherwise).
    assert results["shadow_counts"]["on"]["compared"] >= sum(c["requests"] for c in rounds["on"])
    assert results["shadow_cpu_us_per_answer"] > 0
    assert results["cpu_model"] and results["workers"] == 2
    assert "| on |" in out.with_suffix(".md").read_text()


def test_soak_while_the_alias_moves(registry_copy: dict[str, str], tmp_path: Path) -> None:
    """Load while the alias moves between two versions: no failed request."""
    uri = registry_copy["MLFLOW_TRACKING_URI"]
    first = MlflowClient(uri).get_model_version_by_alias("mnist-cnn", "production")
    model_dir = mlflow.artifacts.download_artifacts(
        f"models:/mnist-cnn/{first.version}", dst_path=str(tmp_path / "model"), tracking_uri=uri
    )
    MlflowClient(uri).create_model_version("mnist-cnn", Path(model_dir).as_uri())  # a second
    args = ["--requests", "1500", "--connections", "32", "--seconds", "60"]
    summary = run_benchmark("bench.soak", args, registry_copy, tmp_path / "soak.json")
    assert summary["requests"] >= 1500 and summary["errors"] == 0, summary
    assert summary["warm_up_errors"] == 0 and summary["alias_moves"] >= 3, summary
    assert len(summary["versions_answering"]) == 2, summary
    assert summary["rss_growth"] < 0.5, summary  # a gross leak; the 20k run's figure is 2 %


def test_preprocess_speed_against_a_baseline(tmp_path: Path) -> None:
    out = tmp_path / "preprocess.json"
    args = ["--repeat", "1", "--baseline", str(PROJECT_ROOT)]  # itself: the same pixels
    results = run_benchmark("bench.preprocess_speed", args, {}, out)
    assert set(results["pictures"]) == {"png28", "canvas", "png280", "paint"}
    canvas = results["pictures"]["canvas"]
    assert canvas["size"] == [280, 280] and canvas["mode"] == "RGBA"
    assert all(canvas[key] > 0 for key in ("pillow_decode", "decode", "to_mnist", "baseline"))
    assert "| canvas (280×280 RGBA) |" in out.with_suffix(".md").read_text()


def test_serve_models_one_short_round(trained_registry: dict[str, str], tmp_path: Path) -> None:
    uri = trained_registry["MLFLOW_TRACKING_URI"]
    production = MlflowClient(uri).get_model_version_by_alias("mnist-cnn", "production")
    model, again = tmp_path / "model.onnx", tmp_path / "again.onnx"
    model.write_bytes(read_onnx_model("mnist-cnn", production.version, uri))
    shutil.copy(model, again)
    out = tmp_path / "models.json"
    args = [str(model), str(again), "--rounds", "1", "--seconds", "1", "--workers", "1",
            "--connections", "4"]  # fmt: skip
    results = run_benchmark("bench.serve_models", args, {}, out)
    (measured,) = results["rounds"]
    cells = [cell for payloads in measured.values() for cell in payloads.values()]
    assert len(cells) == 4 and all(c["requests"] > 0 and c["errors"] == 0 for c in cells)
    assert "| model.onnx, canvas |" in out.with_suffix(".md").read_text()


def test_request_cpu_against_a_baseline(trained_registry: dict[str, str], tmp_path: Path) -> None:
    uri = trained_registry["MLFLOW_TRACKING_URI"]
    production = MlflowClient(uri).get_model_version_by_alias("mnist-cnn", "production")
    model = tmp_path / "model.onnx"
    model.write_bytes(read_onnx_model("mnist-cnn", production.version, uri))
    out = tmp_path / "request_cpu.json"
    args = ["--baseline", str(PROJECT_ROOT), "--rounds", "1", "--requests", "40"]  # itself
    results = run_benchmark("bench.request_cpu", args, {"MNIST_MODEL_PATH": str(model)}, out)
    (measured,) = results["rounds"]
    assert set(measured) == {"canvas", "png28"}
    for sides in measured.values():
        for side in ("ours", "baseline"):
            assert 0 < sides[side]["main_thread_us"] <= sides[side]["cpu_us"] * 1.05, sides
    assert "| canvas |" in out.with_suffix(".md").read_text()
