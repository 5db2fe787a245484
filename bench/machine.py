"""What every training benchmark records about the machine it ran on: the CPU model, whether it
computes bfloat16 natively, the precision used and the threads."""

from __future__ import annotations

import datetime
from pathlib import Path

import torch

from pipeline.training.model import cpu_flags, native_bf16


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's name as the kernel reports it ("AMD EPYC", …), or "unknown"."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def machine(device: torch.device, bf16: bool) -> dict[str, object]:
    """The fields every results JSON carries."""
    return {
        "date": datetime.date.today().isoformat(),
        "cpu_model": cpu_model(),
        "threads_per_process": torch.get_num_threads(),
        "avx512": any(flag.startswith("avx512") for flag in cpu_flags()),
        "native_bf16": native_bf16(torch.device("cpu")),
        "device": str(device),
        "precision": "bf16" if bf16 else "fp32",
    }
