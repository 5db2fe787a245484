"""Distributed data-parallel training (DDP) with `torchrun`: which process this is, and set-up.

`train.processes` in params.yaml (a count, or `auto`: see `pipeline.training.placement`) makes
the train stage start itself under `torchrun --standalone --nproc-per-node N` on this machine,
with the cores split between the processes; several machines are launched with torchrun directly
(see the README). Each process trains on its own shard of every shuffled epoch
with its own augmentation stream; gradients are averaged over processes (gloo on CPUs, NCCL on
GPUs); only rank 0 validates, logs to MLflow and writes the stage outputs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.training.placement import Placement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Cluster()


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher following its environment contract) started us."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch(placement: Placement, module: str, argv: list[str]) -> None:
    """Run `python -m module argv` as `placement`'s DDP processes on this machine, each with its
    share of the cores as threads (torchrun alone would give each one); wait for them."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={placement.processes}", "-m", module, *argv,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(placement.threads_per_process)}
    log.info(
        "Starting %d training processes of %d thread(s) on %s: %s",
        placement.processes, placement.threads_per_process, placement.accelerator,
        " ".join(command),
    )  # fmt: skip
    subprocess.run(command, check=True, env=env)


def pick_device(local_rank: int = 0) -> torch.device:
    """This process's CUDA GPU when there are any, else Apple's GPU (`mps`) when present, else
    the CPU; nothing here needs a GPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def join() -> tuple[Cluster, torch.device]:
    """This process's place and device; under torchrun, join its process group (NCCL for
    GPUs, gloo for CPUs)."""
    if not under_torchrun():
        return SINGLE, pick_device()
    cluster = Cluster(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )
    device = pick_device(cluster.local_rank)
    if cluster.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return cluster, device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
