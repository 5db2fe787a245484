"""The training benchmark at smoke size, with the non-digit families it holds out rotated."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench.train_accuracy import as_argv, build_parser
from tests.conftest import PROJECT_ROOT

ROTATED = ["shapes", "noise"]


def test_the_command_line_handed_to_the_training_processes_reads_back_the_same() -> None:
    parser = build_parser()
    args = parser.parse_args(
        shlex.split(
            "--seeds 1 2 --label x -S train.epochs=2 -S train.seed=3 --keep-onnx /tmp/k "
            "--held-out doodles noise"
        )
    )
    assert parser.parse_args(as_argv(args)) == args


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_rotated_held_out_families_are_drawn_trained_and_scored_apart(
    pipeline_copy: Path,
) -> None:
    """Two training processes, as the default runs: the families named on the command line are
    the held-out ones in the results, the project's own non-digit sets stay as they were."""
    project_sets = digest(pipeline_copy / "data" / "non_digits")
    args = "--seeds 1 --label smoke -S train.processes=2 -S train.epochs=1 --held-out"
    result = subprocess.run(
        [sys.executable, "-m", "bench.train_accuracy", *shlex.split(args), *ROTATED],
        cwd=pipeline_copy,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((pipeline_copy / "bench/results/train_smoke.json").read_text())
    assert summary["held_out"] == ROTATED and summary["processes"] == 2
    (run,) = summary["runs"]
    figures = run["val_non_digits"]
    held_count = sum(figures["by_family"][name]["count"] for name in ROTATED)
    assert figures["held_out"]["count"] == held_count > 0
    assert "doodles" in figures["by_family"]  # every family is scored, seen ones too
    assert figures["seen"]["count"] == figures["all"]["count"] - held_count
    assert digest(pipeline_copy / "data" / "non_digits") == project_sets
