"""Benchmark: where a training step's time goes (augmentation, forward, backward, optimizer,
moving average), for the train stage's parameters.

    python -m bench.train_step_profile [--steps 100] [-S train.batch_size=256 ...]

Needs `dvc repro non_digits` first. Times each part of one process's step of the train stage with
the same settings (bf16 autocast where native, channels-last, AdamW, the moving average when on,
Outlier Exposure's non-digits in the batch; with `train.processes: N` each process takes
batch_size / N images a step, so run it with OMP_NUM_THREADS=1 to see one such process) on
random training batches and prints milliseconds per step and the share outside
forward/backward; the optimizer is timed both in PyTorch's default (for-each) implementation and
fused. Writes `bench/results/train_step_profile.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bench.machine import machine
from pipeline.data.datasets import load_split
from pipeline.params import DEFAULT_PARAMS_FILE, load_params
from pipeline.training.augment import augment
from pipeline.training.distributed import pick_device
from pipeline.training.loop import (
    build_model,
    load_outliers,
    outlier_exposure_loss,
    use_bf16,
    with_outliers,
)
from pipeline.training.placement import place
from pipeline.training.tensors import normalize, to_unit

PARTS = ("augment", "forward", "backward", "optimizer", "moving average")


def profile(overrides: list[str], steps: int, fused: bool) -> dict[str, float]:
    """Median milliseconds per step of each part."""
    params = load_params(DEFAULT_PARAMS_FILE, overrides).train
    device = pick_device()
    images, labels = load_split(params.data_dir, "train")
    outliers = load_outliers(params)
    batch_size = params.batch_size // place(params.processes, params.batch_size).processes
    model = build_model(params).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.max_lr, weight_decay=params.weight_decay, fused=fused
    )
    decay = params.ema_decay
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(params, device))
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {part: [] for part in PARTS}
    for step in range(steps + 10):  # the first 10 warm up
        index = torch.randint(0, len(labels), (batch_size,), generator=generator)
        marks = [time.perf_counter()]
        pixels = images[index]
        if outliers is not None:
            pixels = with_outliers(pixels, outliers, params.outlier_ratio, generator)
        batch = normalize(augment(to_unit(pixels), params.augment, generator))
        batch = batch.to(device, memory_format=torch.channels_last)
        marks.append(time.perf_counter())
        with autocast:
            logits = model(batch).float()
        loss = F.cross_entropy(
            logits[:batch_size], labels[index].to(device), label_smoothing=params.label_smoothing
        )
        if outliers is not None:
            loss = loss + params.outlier_weight * outlier_exposure_loss(logits[batch_size:])
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if decay:
            ema.update_parameters(model)
        marks.append(time.perf_counter())
        if step >= 10:
            for part, start, end in zip(PARTS, marks[:-1], marks[1:], strict=True):
                times[part].append(1000 * (end - start))
    return {part: statistics.median(values) for part, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("-S", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    results = {
        name: profile(args.overrides, args.steps, fused)
        for name, fused in (("for-each AdamW", False), ("fused AdamW", True))
    }
    print("| optimizer | " + " | ".join(PARTS) + " | step | outside forward/backward |")
    print("|---|" + "---|" * (len(PARTS) + 2))
    for name, parts in results.items():
        total = sum(parts.values())
        outside = total - parts["forward"] - parts["backward"]
        cells = " | ".join(f"{parts[part]:.1f}" for part in PARTS)
        print(f"| {name} | {cells} | {total:.1f} | {100 * outside / total:.0f} % |")
    out = Path("bench/results/train_step_profile.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    params = load_params(DEFAULT_PARAMS_FILE, args.overrides).train
    device = pick_device()
    placement = place(params.processes, params.batch_size)
    summary = {
        **machine(device, use_bf16(params, device)),
        "images_per_step": params.batch_size // placement.processes,
        "processes": placement.processes,
        "overrides": args.overrides,
        "milliseconds_per_step": results,
    }
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
