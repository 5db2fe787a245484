"""Training checkpoints: an interrupted run resumes where it stopped and ends where an
uninterrupted one would; `kill -9` mid-training followed by a re-run gives a complete model."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.params import load_params
from pipeline.stages import download, non_digits, preprocess, train
from pipeline.training import job
from pipeline.training.checkpoint import Checkpoint
from pipeline.training.loop import EpochResult, fit
from tests.conftest import PROJECT_ROOT
from tests.synthetic import render_digits


class Interrupted(Exception):
    pass


def tiny_fit_inputs():
    params = load_params(
        PROJECT_ROOT / "params.yaml",
        ["train.epochs=4", "train.batch_size=32", "train.channels=[8, 16]",
         "train.convs_per_block=1", "train.hidden_units=16", "train.ema_decay=0.9"],
    ).train  # fmt: skip
    images, labels = render_digits(200, seed=4)
    train = torch.from_numpy(images[:160]), torch.from_numpy(labels[:160]).long()
    val = torch.from_numpy(images[160:]), torch.from_numpy(labels[160:]).long()
    return params, train, val


def test_an_interrupted_fit_resumes_and_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    params, train, val = tiny_fit_inputs()
    cpu = torch.device("cpu")
    complete = Checkpoint(tmp_path / "a.pt", "config")
    whole = fit(params, train, val, cpu, checkpoint=complete)
    # Kept after the last epoch (the train stage removes it once its outputs are written): a
    # fit that finds it complete trains nothing and returns the same model.
    again_epochs: list[int] = []
    again = fit(params, train, val, cpu, on_epoch=lambda r: again_epochs.append(r.epoch),
                checkpoint=complete)  # fmt: skip
    assert again_epochs == [] and len(again.history) == params.epochs
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], tensor)

    checkpoint = Checkpoint(tmp_path / "b.pt", "config")

    def stop_after_two(result: EpochResult) -> None:
        if result.epoch == 3:  # epoch 3 is trained but not saved: the checkpoint holds 1-2
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(params, train, val, cpu, on_epoch=stop_after_two, checkpoint=checkpoint)
    assert len(checkpoint.load()["history"]) == 2
    resumed_epochs: list[int] = []
    resumed = fit(
        params, train, val, cpu, on_epoch=lambda r: resumed_epochs.append(r.epoch),
        checkpoint=checkpoint,
    )  # fmt: skip
    assert resumed_epochs == [3, 4]
    assert [r.epoch for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert (a.val_loss, a.ema_val_loss) == pytest.approx((b.val_loss, b.ema_val_loss))
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor)


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path: Path) -> None:
    params, train, val = tiny_fit_inputs()
    checkpoint = Checkpoint(tmp_path / "c.pt", "config-1")
    with pytest.raises(Interrupted):
        fit(params, train, val, torch.device("cpu"), on_epoch=_raise_at(2), checkpoint=checkpoint)
    other = Checkpoint(tmp_path / "c.pt", "config-2")
    assert other.load() is None
    epochs: list[int] = []
    fit(params, train, val, torch.device("cpu"), on_epoch=lambda r: epochs.append(r.epoch),
        checkpoint=other)  # fmt: skip
    assert epochs == [1, 2, 3, 4]


def _raise_at(epoch: int):  # type: ignore[no-untyped-def]
    def check(result: EpochResult) -> None:
        if result.epoch == epoch:
            raise Interrupted

    return check


@pytest.mark.slow
def test_kill_9_mid_training_then_rerun_completes_the_model(params_file: Path) -> None:
    argv = ["--params", str(params_file)]
    download.main(argv)
    preprocess.main(argv)
    non_digits.main(argv)  # the train stage's Outlier Exposure reads them
    settings = load_params(params_file).train
    command = [sys.executable, "-m", "pipeline.stages.train", *argv, "-S", "train.epochs=40"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    trainer = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not settings.checkpoint_path.exists():  # at least one epoch saved
            assert trainer.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    assert trainer.returncode == -signal.SIGKILL
    assert not settings.metrics.exists()  # the stage did not finish

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming after epoch" in rerun.stderr
    assert settings.metrics.exists() and settings.onnx_path.exists()
    assert not settings.checkpoint_path.exists()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_loss")}
    assert steps == set(range(1, 41))  # one run holds every epoch, before and after the kill


@pytest.mark.slow
def test_a_failure_after_the_last_epoch_keeps_the_checkpoint_and_the_rerun_trains_nothing(
    params_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["--params", str(params_file)]
    download.main(argv)
    preprocess.main(argv)
    non_digits.main(argv)  # the train stage's Outlier Exposure reads them
    settings = load_params(params_file).train

    def upload_fails(*_: object) -> str:
        raise Interrupted("the model upload failed")

    with monkeypatch.context() as patch, pytest.raises(Interrupted):
        patch.setattr(job, "log_servable_model", upload_fails)
        train.main(argv)
    assert settings.checkpoint_path.exists() and not settings.metrics.exists()
    caplog.set_level(logging.INFO, logger="pipeline.training")
    train.main(argv)
    # Every epoch came from the checkpoint: none was trained again.
    assert f"Resuming after epoch {settings.epochs}" in caplog.text
    assert settings.metrics.exists() and settings.onnx_path.exists()
    assert not settings.checkpoint_path.exists()  # removed once every output is written
