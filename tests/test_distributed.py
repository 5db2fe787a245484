"""Distributed data-parallel training: shards, and the train stage as 2 gloo processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.params import load_params
from pipeline.stages import download, non_digits, preprocess
from pipeline.training.distributed import Cluster
from pipeline.training.loop import shard
from tests.conftest import PROJECT_ROOT


@pytest.mark.parametrize(("count", "world_size"), [(10, 2), (11, 2), (13, 4), (5, 1)])
def test_shards_are_disjoint_equal_and_cover_the_epoch(count: int, world_size: int) -> None:
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    shards = [shard(order, Cluster(rank, world_size, rank)) for rank in range(world_size)]
    assert len({len(part) for part in shards}) == 1  # equal: no process waits at a step
    taken = torch.cat(shards)
    assert len(set(taken.tolist())) == len(taken)  # disjoint
    assert len(taken) == count - count % world_size  # all but the remainder


@pytest.mark.slow
def test_train_stage_as_two_ddp_processes_logs_once(params_file: Path) -> None:
    """`train.processes=2` runs the stage under torchrun: both ranks train their half of every
    epoch, only rank 0 logs to MLflow and writes the outputs."""
    argv = ["--params", str(params_file)]
    download.main(argv)
    preprocess.main(argv)
    non_digits.main(argv)  # the train stage's Outlier Exposure reads them
    epochs = 2
    command = [sys.executable, "-m", "pipeline.stages.train", *argv,
               "-S", "train.processes=2", "-S", f"train.epochs={epochs}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    trained = re.findall(r"rank (\d)/2 trained on (\d+) images in epoch (\d)", done.stderr)
    params = load_params(params_file).train
    train_size = json.loads((params_file.parent / "metrics/data.json").read_text())["train"]
    half = train_size["total"] // 2
    assert sorted(trained) == sorted(
        (str(rank), str(half), str(epoch)) for rank in (0, 1) for epoch in range(1, epochs + 1)
    )

    # Gradients were averaged: both processes end with the same weights.
    checksums = dict(re.findall(r"rank (\d)/2 final weights checksum (\S+)", done.stderr))
    assert set(checksums) == {"0", "1"} and checksums["0"] == checksums["1"]

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1  # rank 1 logged nothing
    (run,) = runs
    assert run.data.params["processes"] == "2" and run.data.tags["world_size"] == "2"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert steps == list(range(1, epochs + 1))  # one value per epoch: rank 0 alone
    assert json.loads(params.run_info.read_text())["run_id"] == run.info.run_id
    assert params.onnx_path.is_file() and params.model_path.is_file()
