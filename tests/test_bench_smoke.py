"""The serving benchmark at smoke size: both servers start, answer under load, and stop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    shutil.which("wrk") is None and not os.environ.get("CI"),
    reason="wrk is not installed (apt-get install wrk); .ci/run installs it",
)
def test_serve_throughput_quick_run(trained_registry: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.serve_throughput", "--quick", "--out", str(out)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **trained_registry},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())
    ours = results["ours"]["2"]
    cells = [cell for cells in ours["cells"].values() for cell in cells]
    cells += results["mlflow"]["1"]["cells"]["json28"]
    assert cells and all(cell["requests"] > 0 and cell["errors"] == 0 for cell in cells)
    assert all(rss > 0 for rss in ours["rss_mib_per_worker"])
    assert results["bare_session_batch16_images_per_s"] > 0
    assert "| ours, /predict, 28×28 PNG | 2 |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 0
