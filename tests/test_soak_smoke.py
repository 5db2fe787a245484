"""The soak benchmark at a size that fits CI: load while the alias moves, no failed request."""

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

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    shutil.which("wrk") is None and not os.environ.get("CI"),
    reason="wrk is not installed (apt-get install wrk); .ci/run installs it",
)
def test_soak_while_the_alias_moves(registry_copy: dict[str, str], tmp_path: Path) -> None:
    uri = registry_copy["MLFLOW_TRACKING_URI"]
    first = MlflowClient(uri).get_model_version_by_alias("mnist-cnn", "production")
    model_dir = mlflow.artifacts.download_artifacts(
        f"models:/mnist-cnn/{first.version}", dst_path=str(tmp_path / "model"), tracking_uri=uri
    )
    MlflowClient(uri).create_model_version("mnist-cnn", Path(model_dir).as_uri())  # a second
    out = tmp_path / "soak.json"
    command = [sys.executable, "-m", "bench.soak", "--requests", "1500", "--connections", "32"]
    result = subprocess.run(
        [*command, "--seconds", "60", "--out", str(out)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **registry_copy},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["requests"] >= 1500 and summary["errors"] == 0, summary
    assert summary["warm_up_errors"] == 0 and summary["alias_moves"] >= 3, summary
    assert len(summary["versions_answering"]) == 2, summary
    assert summary["rss_growth"] < 0.5, summary  # a gross leak; the 20k run's figure is 2 %
