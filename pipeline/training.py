"""The training loop: augmentation, AdamW with a one-cycle schedule, best epoch by validation."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from pipeline.augment import random_affine
from pipeline.imaging import normalize, to_unit
from pipeline.model import DigitCNN, native_bf16, predict_logits
from pipeline.params import TrainParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    epoch_loss: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float


@dataclass
class FitResult:
    model: DigitCNN
    history: list[EpochResult]
    best: EpochResult


def build_model(params: TrainParams) -> DigitCNN:
    return DigitCNN(params.channels, params.hidden_units, params.dropout, params.convs_per_block)


def use_bf16(params: TrainParams, device: torch.device) -> bool:
    return params.precision == "bf16" or (params.precision == "auto" and native_bf16(device))


def evaluate_logits(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) of `model` on uint8 images."""
    logits = predict_logits(model, images, batch_size)
    loss = F.cross_entropy(logits, labels.to(logits.device)).item()
    accuracy = (logits.argmax(dim=1).cpu() == labels.cpu()).float().mean().item()
    return loss, accuracy


def _train_epoch(
    model: nn.Module,
    ema: AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    train: tuple[torch.Tensor, torch.Tensor],
    params: TrainParams,
    generator: torch.Generator,
    description: str,
) -> float:
    """One pass over the shuffled, freshly augmented training set; returns the mean loss."""
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(params, device))
    images, labels = train
    order = torch.randperm(len(labels), generator=generator)
    total_loss = 0.0
    model.train()
    bar = tqdm(order.split(params.batch_size), desc=description, leave=False)
    for index in bar:
        batch = random_affine(to_unit(images[index]), params.augment, generator)
        batch = normalize(batch).to(device, memory_format=torch.channels_last)
        with autocast:
            logits = model(batch)
        loss = F.cross_entropy(
            logits.float(), labels[index].to(device), label_smoothing=params.label_smoothing
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update_parameters(model)
        total_loss += loss.item() * len(index)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return total_loss / len(labels)


def fit(
    params: TrainParams,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
) -> FitResult:
    """Train for `params.epochs` and return the model of the best epoch by validation accuracy.

    With `ema_decay`, the weights validated and kept are an exponential moving average of the
    trained ones (BatchNorm statistics included).
    """
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    model = build_model(params).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.max_lr, weight_decay=params.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=params.max_lr,
        epochs=params.epochs,
        steps_per_epoch=-(-len(train[1]) // params.batch_size),
    )
    ema = None
    if params.ema_decay:
        average = get_ema_multi_avg_fn(params.ema_decay)
        ema = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
    scored: nn.Module = ema.module if ema is not None else model
    history: list[EpochResult] = []
    best: EpochResult | None = None
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        description = f"epoch {epoch}/{params.epochs}"
        epoch_loss = _train_epoch(
            model, ema, optimizer, schedule, train, params, generator, description
        )
        val_loss, val_accuracy = evaluate_logits(scored, *val)
        result = EpochResult(
            epoch=epoch,
            epoch_loss=epoch_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            learning_rate=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
        )
        history.append(result)
        log.info(
            "epoch %d/%d: loss %.4f, val_loss %.4f, val_accuracy %.4f (%.1f s)",
            epoch, params.epochs, epoch_loss, val_loss, val_accuracy, result.seconds,
        )  # fmt: skip
        on_epoch(result)
        if best is None or (val_accuracy, -val_loss) > (best.val_accuracy, -best.val_loss):
            best, best_state = result, copy.deepcopy(scored.state_dict())
    assert best is not None  # epochs > 0 is validated by the params model
    scored.load_state_dict(best_state)
    return FitResult(model=scored.eval(), history=history, best=best)
