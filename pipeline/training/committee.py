"""A committee: networks of one recipe trained from different seeds, served as one model.

Each member is trained exactly as a single network is (`loop.fit`), from its own seed; the
committee's output is the mean of the members' log-probabilities, so it is calibrated, scored and
exported to ONNX as one graph, like the shift averaging, and serving gets it without knowing.
`train.committee: 1` (the default recipe) is the single network itself; `train.preset: best`
trains a committee (`pipeline.params.PRESETS`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.params import TrainParams
from pipeline.training.checkpoint import Checkpoint
from pipeline.training.distributed import SINGLE, Cluster
from pipeline.training.loop import EpochResult, FitResult, fit

# Member k of the committee of seed s trains from seed s + k × this: member 0 is the single
# network of seed s, and the committees of nearby seeds (1, 2, 3) share no member.
MEMBER_SEED_STRIDE = 1000


def member_seed(seed: int, member: int) -> int:
    return seed + MEMBER_SEED_STRIDE * member


class Committee(nn.Module):
    """The mean of the members' log-probabilities (a normalised geometric mean of their
    probabilities) for the normalised images (N, 1, H, W)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a committee of {len(members)}: at least 2 members")
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        votes = [member(images).float().log_softmax(dim=1) for member in self.members]
        return torch.stack(votes).mean(dim=0)


def committee_of(networks: Sequence[nn.Module]) -> nn.Module:
    """The networks as one model; a single network is itself."""
    return networks[0] if len(networks) == 1 else Committee(networks)


@dataclass(frozen=True)
class CommitteeResult:
    """Each member's fit, in member order (member 0: the single network of the seed)."""

    members: list[FitResult]

    @functools.cached_property
    def model(self) -> nn.Module:
        return committee_of([member.model for member in self.members])

    @property
    def history(self) -> list[EpochResult]:
        return [epoch for member in self.members for epoch in member.history]


def member_checkpoint(checkpoint: Checkpoint | None, member: int) -> Checkpoint | None:
    """Member 0 keeps the run's checkpoint; each other member has a file and fingerprint of its
    own, so an interrupted committee resumes with the member it was training."""
    if checkpoint is None or member == 0:
        return checkpoint
    name = f"{checkpoint.path.stem}.member{member}{checkpoint.path.suffix}"
    path = checkpoint.path.with_name(name)
    return dataclasses.replace(
        checkpoint, path=path, fingerprint=f"{checkpoint.fingerprint}-member{member}"
    )


def fit_committee(
    params: TrainParams,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
    checkpoint: Checkpoint | None = None,
    cluster: Cluster = SINGLE,
    outliers: torch.Tensor | None = None,
) -> CommitteeResult | None:
    """Fit `params.committee` members one after the other, each from its own seed. Their epochs
    reach `on_epoch` numbered on from the previous member's (member 1's first epoch follows
    member 0's last), so that one run's history shows them all. The main process gets the
    result, the others None (as `fit`)."""
    members = []
    for member in range(params.committee):
        offset = member * params.epochs

        def renumbered(result: EpochResult, offset: int = offset) -> None:
            on_epoch(dataclasses.replace(result, epoch=result.epoch + offset))

        result = fit(
            params.model_copy(update={"seed": member_seed(params.seed, member)}),
            train,
            val,
            device,
            on_epoch=renumbered,
            checkpoint=member_checkpoint(checkpoint, member),
            cluster=cluster,
            outliers=outliers,
        )
        if result is not None:
            history = [dataclasses.replace(e, epoch=e.epoch + offset) for e in result.history]
            members.append(dataclasses.replace(result, history=history))
    return CommitteeResult(members) if members else None


def clear_checkpoints(checkpoint: Checkpoint) -> None:
    """Remove the run's checkpoint and every member's, an earlier larger committee's too."""
    checkpoint.clear()
    path = checkpoint.path
    for member in path.parent.glob(f"{path.stem}.member*{path.suffix}"):
        member.unlink(missing_ok=True)
