"""A committee: members trained from their own seeds, served as one graph that averages their
log-probabilities; `train.preset: best` trains one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from mnist_core.classifier import DigitClassifier
from pipeline.params import PRESETS, load_params
from pipeline.stages import download, non_digits, preprocess, train
from pipeline.training.checkpoint import Checkpoint
from pipeline.training.committee import (
    Committee,
    committee_of,
    fit_committee,
    member_checkpoint,
    member_seed,
)
from pipeline.training.export import export_onnx
from pipeline.training.loop import fit
from pipeline.training.model import predict_logits
from pipeline.training.tensors import to_model_input
from tests.conftest import PROJECT_ROOT
from tests.synthetic import render_digits
from tests.test_export import settled_network
from tests.test_resume import tiny_fit_inputs


def two_networks() -> list[torch.nn.Module]:
    first = settled_network((8, 16), 1)
    torch.manual_seed(1)
    second = settled_network((8, 16), 1)
    with torch.no_grad():  # settled_network seeds itself: make the second one differ
        for parameter in second.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return [first, second]


def test_the_committee_averages_its_members_log_probabilities() -> None:
    members = two_networks()
    images = to_model_input(render_digits(6, seed=2)[0])
    with torch.no_grad():
        votes = [member(images).log_softmax(dim=1) for member in members]
        got = Committee(members)(images)
    torch.testing.assert_close(got, (votes[0] + votes[1]) / 2)
    assert not torch.allclose(got, votes[0], atol=1e-3)


def test_one_network_is_itself_and_a_committee_has_two_or_more() -> None:
    (network, _) = two_networks()
    assert committee_of([network]) is network
    with pytest.raises(ValueError, match="at least 2"):
        Committee([network])


def test_the_exported_committee_is_one_graph_giving_the_same_answers(tmp_path: Path) -> None:
    committee = Committee(two_networks()).eval()
    export_onnx(committee, tmp_path / "model.onnx")
    images, _ = render_digits(20, seed=4)
    expected = predict_logits(committee, torch.from_numpy(images)).numpy()
    classifier = DigitClassifier(tmp_path / "model.onnx", threads=1)
    for batch in (images[:1], images):
        np.testing.assert_allclose(
            classifier.scores(batch).logits, expected[: len(batch)], rtol=1e-4, atol=1e-4
        )


def test_the_best_preset_is_a_committee_and_a_setting_beside_it_wins() -> None:
    def committee(*overrides: str) -> int:
        return load_params(PROJECT_ROOT / "params.yaml", list(overrides)).train.committee

    assert committee() == 1
    assert committee("train.preset=best") == PRESETS["best"]["committee"] > 1
    assert committee("train.preset=best", "train.committee=2") == 2
    assert committee("train.committee=4") == 4


def test_members_train_from_their_own_seeds_member_zero_as_the_single_network(
    tmp_path: Path,
) -> None:
    params, train, val = tiny_fit_inputs()
    params = params.model_copy(update={"epochs": 2, "committee": 2, "seed": 5})
    epochs: list[int] = []
    checkpoint = Checkpoint(tmp_path / "state.pt", "fingerprint")
    result = fit_committee(
        params, train, val, torch.device("cpu"), on_epoch=lambda r: epochs.append(r.epoch),
        checkpoint=checkpoint,
    )  # fmt: skip
    assert result is not None and len(result.members) == 2
    assert epochs == [1, 2, 3, 4] == [r.epoch for r in result.history]
    single = fit(params.model_copy(update={"committee": 1}), train, val, torch.device("cpu"))
    zero, one = (m.model.state_dict() for m in result.members)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(zero[name], value)
    assert any(
        not torch.equal(zero[name], one[name]) for name in zero if zero[name].is_floating_point()
    )
    assert member_seed(5, 1) != member_seed(6, 0)  # committees of nearby seeds share no member
    # each member keeps a checkpoint of its own
    assert member_checkpoint(checkpoint, 0) == checkpoint
    assert member_checkpoint(checkpoint, 1).path.exists()
    assert isinstance(result.model, Committee)


@pytest.mark.slow
def test_the_train_stage_registers_a_committee_as_one_onnx_model(params_file: Path) -> None:
    argv = ["--params", str(params_file)]
    download.main(argv)
    preprocess.main(argv)
    non_digits.main(argv)
    train.main([*argv, "-S", "train.committee=2"])
    settings = load_params(params_file).train
    metrics = json.loads(settings.metrics.read_text())
    assert {"member0_best_val_accuracy", "member1_best_val_accuracy"} <= set(metrics)
    history = settings.history.read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3", "4"]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.run_name.startswith("cnn8-16-16-x2-")
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_loss")}
    assert steps == {1, 2, 3, 4}  # both members' epochs in the one run
    images, _ = render_digits(8, seed=3)
    probabilities = DigitClassifier(settings.onnx_path, threads=1).predict_proba(images)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    leftovers = list(settings.checkpoint_path.parent.glob(f"{settings.checkpoint_path.stem}*"))
    assert leftovers == []  # every member's checkpoint is cleared with the run's
