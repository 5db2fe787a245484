"""The training loop: augmentation, AdamW with a one-cycle schedule, best epoch by validation."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from pipeline.data.datasets import FeedbackSplit, NonDigitSet
from pipeline.params import TrainParams
from pipeline.training.augment import augment
from pipeline.training.checkpoint import Checkpoint
from pipeline.training.distributed import SINGLE, Cluster
from pipeline.training.model import DigitCNN, native_bf16, predict_logits
from pipeline.training.tensors import normalize, to_unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochResult:
    """One epoch's numbers. `train_loss` and `val_*` are plain cross-entropy, comparable;
    `train_objective` is what was minimised (with label smoothing, whose floor is far above 0).
    `val_*` score the trained weights, `ema_val_*` their moving average (NaN without one); `kept`
    says which of the two the epoch would keep."""

    epoch: int
    train_loss: float
    train_objective: float
    val_loss: float
    val_accuracy: float
    ema_val_loss: float
    ema_val_accuracy: float
    kept: str
    learning_rate: float
    seconds: float

    @property
    def score(self) -> tuple[float, float]:
        """What picks the best epoch: validation accuracy, then lower loss, of the kept weights."""
        if self.kept == "ema":
            return self.ema_val_accuracy, -self.ema_val_loss
        return self.val_accuracy, -self.val_loss


@dataclass
class FitResult:
    model: DigitCNN
    history: list[EpochResult]
    best: EpochResult


def build_model(params: TrainParams) -> DigitCNN:
    return DigitCNN(params.channels, params.hidden_units, params.dropout, params.convs_per_block)


def load_outliers(params: TrainParams) -> torch.Tensor | None:
    """The training families' non-digits for Outlier Exposure, or None when it is off."""
    if not (params.outlier_weight and params.outlier_ratio):
        return None
    return torch.from_numpy(NonDigitSet.load(params.non_digits).images)


def load_feedback(params: TrainParams) -> FeedbackSplit:
    """The training side of the user feedback; empty when there is none or it weighs nothing."""
    if params.feedback is None or not params.feedback_weight:
        return FeedbackSplit.empty()
    return FeedbackSplit.load(params.feedback)


def add_feedback(
    train: tuple[torch.Tensor, torch.Tensor],
    outliers: torch.Tensor | None,
    feedback: FeedbackSplit,
    weight: int,
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
    """The training split with the feedback digits appended `weight` times, and the Outlier
    Exposure set with the feedback non-digits appended (left out when Outlier Exposure is off)."""
    images, labels = feedback.digits()
    if len(labels) and weight:
        train = (
            torch.cat([train[0], torch.from_numpy(images).repeat(weight, 1, 1)]),
            torch.cat([train[1], torch.from_numpy(labels).repeat(weight)]),
        )
    non_digits = feedback.non_digits()
    if outliers is not None and len(non_digits):
        outliers = torch.cat([outliers, torch.from_numpy(non_digits)])
    return train, outliers


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


def outlier_exposure_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row's softmax against the uniform distribution, minus its floor
    log(10): zero when the network gives a non-digit no preference among the digits (Hendrycks
    et al., 2019)."""
    return (logits.logsumexp(dim=1) - logits.mean(dim=1)).mean() - math.log(logits.shape[1])


def turn_and_mirror(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each non-digit turned by a random quarter turn and mirrored or not: still not a digit,
    and eight times the variety (a digit could not take this: a turned 6 is a 9)."""
    turns = torch.randint(4, (len(images),), generator=generator)
    mirror = torch.rand(len(images), generator=generator) < 0.5
    out = images.clone()
    for quarter in range(1, 4):
        chosen = turns == quarter
        out[chosen] = torch.rot90(images[chosen], quarter, dims=(-2, -1))
    out[mirror] = out[mirror].flip(-1)
    return out


def with_outliers(
    pixels: torch.Tensor, outliers: torch.Tensor, ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """`pixels` followed by `ratio` × as many non-digits drawn at random, turned and mirrored."""
    count = max(1, round(ratio * len(pixels)))
    drawn = outliers[torch.randint(len(outliers), (count,), generator=generator)]
    return torch.cat([pixels, turn_and_mirror(drawn, generator)])


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one process's random draws in one epoch: a resumed or distributed run draws
    exactly what an uninterrupted one would, with no random state to carry over."""
    return seed * 1_000_003 + epoch * 1_009 + rank


def shard(order: torch.Tensor, cluster: Cluster) -> torch.Tensor:
    """This process's share of an epoch's shuffled order, equal for every process (a few images
    an epoch are left out when the count does not divide, as DistributedSampler does)."""
    usable = len(order) - len(order) % cluster.world_size
    return order[cluster.rank : usable : cluster.world_size]


def _train_epoch(
    network: nn.Module,
    ema: AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    train: tuple[torch.Tensor, torch.Tensor],
    params: TrainParams,
    epoch: int,
    cluster: Cluster,
    outliers: torch.Tensor | None = None,
) -> tuple[float, float]:
    """One pass over the shuffled, freshly augmented training set (this process's shard of it);
    returns the mean plain cross-entropy and the mean objective (with label smoothing and the
    outlier term) over all processes.

    With `outliers` (uint8 non-digits), every step also draws `outlier_ratio` × its batch of
    them at random, augments them with the digits and adds `outlier_weight` × their
    outlier-exposure loss."""
    device = next(network.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(params, device))
    images, labels = train
    # The order is the same in every process; augmentation and dropout draw their own.
    shuffle = torch.Generator().manual_seed(epoch_seed(params.seed, epoch))
    order = torch.randperm(len(labels), generator=shuffle)
    generator = torch.Generator().manual_seed(epoch_seed(params.seed, epoch, 1 + cluster.rank))
    torch.manual_seed(epoch_seed(params.seed, epoch, 1 + cluster.rank))  # dropout
    # Every process takes batch_size / N images a step: the global batch, and so the schedule
    # and every hyperparameter, stay those of one process.
    batches = shard(order, cluster).split(max(1, params.batch_size // cluster.world_size))
    plain_total = objective_total = 0.0
    network.train()
    # A bar in a terminal; in logs (CI, redirected output) the per-epoch line is the progress.
    description = f"epoch {epoch}/{params.epochs}"
    bar = tqdm(batches, desc=description, leave=False, disable=None if cluster.is_main else True)
    exposure = outliers is not None and params.outlier_weight > 0 and params.outlier_ratio > 0
    for index in bar:
        pixels = images[index]
        if exposure:
            pixels = with_outliers(pixels, outliers, params.outlier_ratio, generator)
        batch = augment(to_unit(pixels), params.augment, generator)
        batch = normalize(batch).to(device, memory_format=torch.channels_last)
        with autocast:
            logits = network(batch).float()
        logits, outlier_logits = logits[: len(index)], logits[len(index) :]
        targets = labels[index].to(device)
        loss = F.cross_entropy(logits, targets, label_smoothing=params.label_smoothing)
        if exposure:
            loss = loss + params.outlier_weight * outlier_exposure_loss(outlier_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update_parameters(network.module if cluster.distributed else network)
        with torch.no_grad():
            plain = F.cross_entropy(logits, targets)
        plain_loss = plain.item()
        plain_total += plain_loss * len(index)
        objective_total += loss.item() * len(index)
        bar.set_postfix(loss=f"{plain_loss:.4f}")
    # Summed over processes; on the training device, as NCCL reduces CUDA tensors only.
    totals = torch.tensor(
        [plain_total, objective_total, sum(len(index) for index in batches)],
        dtype=torch.float64,
        device=device,
    )
    if cluster.distributed:
        log.info(
            "rank %d/%d trained on %d images in epoch %d",
            cluster.rank, cluster.world_size, int(totals[2]), epoch,
        )  # fmt: skip
        dist.all_reduce(totals)
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def fit(
    params: TrainParams,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
    checkpoint: Checkpoint | None = None,
    cluster: Cluster = SINGLE,
    outliers: torch.Tensor | None = None,
) -> FitResult | None:
    """Train for `params.epochs` and return the weights of the best epoch by validation accuracy.

    With `ema_decay`, an exponential moving average of the weights (BatchNorm statistics
    included) is validated beside them each epoch, and the one with the lower validation loss is
    kept: the average on full runs, the raw weights on runs too short for the average to forget
    its random start.

    With a `checkpoint`, the whole state is saved after every epoch and a run of the same
    configuration resumes after the last saved epoch (every epoch's random draws are seeded by
    its number, so it ends where an uninterrupted run would); the file stays when training is
    complete (the caller clears it once the model is safe), and a run resumed from it then trains
    nothing more.

    With `outliers` (uint8 non-digits, N×28×28), every step also teaches the network to spread
    its probabilities evenly over them (Outlier Exposure: see `_train_epoch`).

    In a distributed run (`cluster`), every process trains its shard and gradients are averaged;
    only the main process validates, keeps the best epoch and checkpoints, and only it gets a
    result (the others get None).
    """
    if cluster.distributed and params.batch_size % cluster.world_size:
        raise ValueError(
            f"train.batch_size ({params.batch_size}) must be a multiple of the number of "
            f"processes ({cluster.world_size}): each process takes an equal share of a batch"
        )
    torch.manual_seed(params.seed)
    model = build_model(params).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.max_lr, weight_decay=params.weight_decay
    )
    per_process = len(train[1]) // cluster.world_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=params.max_lr,
        epochs=params.epochs,
        steps_per_epoch=-(-per_process // (params.batch_size // cluster.world_size)),
    )
    ema = None
    if params.ema_decay and cluster.is_main:
        average = get_ema_multi_avg_fn(params.ema_decay)
        ema = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
    history: list[EpochResult] = []
    best: EpochResult | None = None
    best_state: dict[str, torch.Tensor] = {}
    # The main process reads the checkpoint and hands it to the others (they may not share its
    # disk), before DDP is set up, so every process resumes from the same state.
    saved = checkpoint.load() if checkpoint and cluster.is_main else None
    if cluster.distributed:
        box = [saved]
        dist.broadcast_object_list(box, src=0)
        saved = box[0]
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        history = [EpochResult(**result) for result in saved["history"]]
        if cluster.is_main:
            if ema is not None:
                ema.load_state_dict(saved["ema"])
            best, best_state = EpochResult(**saved["best"]), saved["best_state"]
            log.info("Resuming after epoch %d from %s", len(history), checkpoint.path)
    network: nn.Module = model
    if cluster.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        network = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    for epoch in range(len(history) + 1, params.epochs + 1):
        started = time.perf_counter()
        train_loss, train_objective = _train_epoch(
            network, ema, optimizer, schedule, train, params, epoch, cluster, outliers
        )
        if not cluster.is_main:
            continue
        val_loss, val_accuracy = evaluate_logits(model, *val)
        ema_loss, ema_accuracy = evaluate_logits(ema.module, *val) if ema else (math.nan, math.nan)
        # Loss rather than accuracy decides between the two: on 5k images their accuracies
        # often differ by an image or two, which is noise.
        kept = "ema" if ema and ema_loss < val_loss else "weights"
        result = EpochResult(
            epoch=epoch,
            train_loss=train_loss,
            train_objective=train_objective,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            ema_val_loss=ema_loss,
            ema_val_accuracy=ema_accuracy,
            kept=kept,
            learning_rate=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
        )
        history.append(result)
        log.info(
            "epoch %d/%d: loss %.4f, val_loss %.4f, val_accuracy %.4f, EMA %.4f/%.4f (%.1f s)",
            epoch, params.epochs, train_loss, val_loss, val_accuracy, ema_loss, ema_accuracy,
            result.seconds,
        )  # fmt: skip
        on_epoch(result)
        if best is None or result.score > best.score:
            source = ema.module if kept == "ema" and ema else model
            best, best_state = result, copy.deepcopy(source.state_dict())
        if checkpoint is not None:
            checkpoint.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "history": [dataclasses.asdict(r) for r in history],
                    "best": dataclasses.asdict(best),
                    "best_state": best_state,
                }
            )
    if cluster.distributed:
        # The processes must end with the same weights: each logs a checksum to compare.
        checksum = sum(float(p.double().sum()) for p in model.parameters())
        log.info(
            "rank %d/%d final weights checksum %.10e", cluster.rank, cluster.world_size, checksum
        )
    if not cluster.is_main:
        return None
    assert best is not None  # epochs > 0 is validated by the params model
    # The checkpoint stays: the caller removes it once every output is written.
    model.load_state_dict(best_state)
    return FitResult(model=model.eval(), history=history, best=best)
