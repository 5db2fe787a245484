"""Where training runs: how many data-parallel processes, how many threads each, which devices.

`train.processes: auto` lets the hardware decide:
- CUDA GPUs: one process per GPU, each rank on its own device (NCCL cannot share one GPU between
  ranks), as many as divide the batch evenly;
- Apple's GPU (`mps`): one process (DDP has no `mps` backend);
- a CPU: two processes, each with half the cores as threads. On the project's 2-core machines two
  one-thread processes trained 1.2-1.4× faster than one two-thread process (README, "Training on
  several processes"); with more cores the threads are split between the two processes rather
  than left at torchrun's one each. A larger count is one `-S train.processes=N` away.
An explicit count is taken as it is, with the cores split between its processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch

Accelerator = Literal["cuda", "mps", "cpu"]
# Data-parallel processes `auto` starts on a CPU of at least this many cores.
CPU_PROCESSES = 2


@dataclass(frozen=True)
class Placement:
    """How many training processes to start, with how many threads each, on which accelerator."""

    processes: int
    threads_per_process: int
    accelerator: Accelerator


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def present_accelerator() -> tuple[Accelerator, int]:
    """The accelerator PyTorch sees here and how many devices of it."""
    if torch.cuda.is_available():
        return "cuda", torch.cuda.device_count()
    if torch.backends.mps.is_available():
        return "mps", 1
    return "cpu", 1


def place(
    requested: int | Literal["auto"],
    batch_size: int,
    accelerator: tuple[Accelerator, int] | None = None,
    cores: int | None = None,
) -> Placement:
    """The placement for `train.processes` (a count or `auto`) on this machine, or on the
    `accelerator` (kind, devices) and `cores` given."""
    kind, devices = accelerator or present_accelerator()
    cores = cores or usable_cores()
    if requested == "auto":
        processes = {"cuda": devices, "mps": 1, "cpu": min(CPU_PROCESSES, cores)}[kind]
        # Each process takes an equal share of a batch: the most that divide it.
        processes = max(p for p in range(1, processes + 1) if batch_size % p == 0)
    else:
        processes = requested
        if kind == "cuda" and processes > devices:
            raise ValueError(
                f"train.processes is {processes} but PyTorch sees {devices} CUDA GPU(s): each "
                "data-parallel process needs a GPU of its own. Use `train.processes: auto` "
                "(one process per GPU) or a count up to the GPUs."
            )
        if kind == "mps" and processes > 1:
            raise ValueError(
                f"train.processes is {processes} on Apple's GPU (mps), where PyTorch has no "
                "data-parallel backend: use `train.processes: auto` or 1."
            )
    return Placement(processes, max(1, cores // processes), kind)
