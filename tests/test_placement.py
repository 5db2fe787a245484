"""`train.processes`: `auto` follows the hardware (one process per GPU, each rank on its own
device; one on `mps`; two on a CPU with the cores split), and a count is checked against it."""

from __future__ import annotations

import subprocess

import pytest

from pipeline.training import distributed
from pipeline.training.placement import Placement, place


@pytest.mark.parametrize(
    ("accelerator", "cores", "expected"),
    [
        (("cuda", 4), 16, Placement(4, 4, "cuda")),
        (("cuda", 1), 8, Placement(1, 8, "cuda")),
        (("cuda", 3), 12, Placement(2, 6, "cuda")),  # 3 does not divide the batch of 256
        (("mps", 1), 8, Placement(1, 8, "mps")),
        (("cpu", 1), 2, Placement(2, 1, "cpu")),
        (("cpu", 1), 16, Placement(2, 8, "cpu")),
        (("cpu", 1), 1, Placement(1, 1, "cpu")),
    ],
)
def test_auto_follows_the_hardware(
    accelerator: tuple[str, int], cores: int, expected: Placement
) -> None:
    assert place("auto", 256, accelerator, cores) == expected  # type: ignore[arg-type]


def test_a_count_splits_the_cores_between_its_processes() -> None:
    assert place(4, 256, ("cpu", 1), 16) == Placement(4, 4, "cpu")
    assert place(3, 255, ("cpu", 1), 2) == Placement(3, 1, "cpu")


def test_more_processes_than_gpus_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"sees 1 CUDA GPU.*a GPU of its own"):
        place(2, 256, ("cuda", 1), 16)
    with pytest.raises(ValueError, match="mps"):
        place(2, 256, ("mps", 1), 8)


def test_launch_gives_each_process_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(
        subprocess, "run", lambda command, check, env: started.append((command, env))
    )
    distributed.launch(Placement(2, 8, "cpu"), "pipeline.stages.train", ["-S", "train.epochs=1"])
    [(command, env)] = started
    assert "--nproc-per-node=2" in command
    assert command[-3:] == ["pipeline.stages.train", "-S", "train.epochs=1"]
    assert env["OMP_NUM_THREADS"] == "8"


def test_each_rank_gets_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 4)
    assert [str(distributed.pick_device(rank)) for rank in range(4)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3",
    ]  # fmt: skip
