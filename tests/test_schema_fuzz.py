"""Schemathesis v4's own CLI, `--checks all`, against a live server's OpenAPI schema, with the
project's `schemathesis.toml`: no failure and no warning. Every check runs (5xx, status codes,
content types, response schemas, schema-valid requests accepted, schema-violating ones refused,
methods, headers); the toml allows only the refusals that each operation documents and no JSON
Schema can say beforehand, each with its reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import PROJECT_ROOT, served_in_thread

pytestmark = pytest.mark.slow

CONFIG = PROJECT_ROOT / "schemathesis.toml"
# Bounded: this many generated requests per operation and phase (about 1,200 in all, 15 s),
# from a fixed seed so that a failure in CI is one a developer can replay.
EXAMPLES_PER_OPERATION = 100
SEED = 2
MIN_CASES = 1000
TIMEOUT_SECONDS = 300
OPERATIONS = 7


def schemathesis_run(base_url: str, report: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(CONFIG),
        "run", f"{base_url}/openapi.json", "--checks", "all", "--workers", "1",
        "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(SEED),
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    # In a scratch folder: schemathesis keeps its own files where it runs.
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=report.parent
    )


def test_schemathesis_checks_all_finds_nothing(
    trained_registry: dict[str, str], tmp_path: Path
) -> None:
    report = tmp_path / "schemathesis.json"
    with served_in_thread(create_app(ServingSettings(**trained_registry))) as url:
        result = schemathesis_run(url, report)
    summary = json.loads(report.read_text())
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert summary["operations"]["tested"] == OPERATIONS, summary["operations"]
    assert summary["test_cases"]["generated"] >= MIN_CASES, summary["test_cases"]
    # Not only refusals: schema-valid requests reached the model (pixels; schemathesis's bytes
    # are never a picture) and the feedback store (with the ids of its own predictions).
    for label in ("POST /predict/pixels", "POST /feedback", "GET /model"):
        accepted = sum(phase["accepted"] for phase in summary["valid_rates"][label].values())
        assert accepted > 0, summary["valid_rates"][label]
