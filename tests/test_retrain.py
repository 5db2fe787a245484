"""Retraining from feedback: the export stage, training on its training side, the held-out score
in evaluate and the register gate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from mnist_core.labels import NOT_A_DIGIT
from monitoring.records import (
    FeedbackFilter,
    FeedbackSet,
    PredictionRecord,
    input_hash,
    new_prediction_id,
)
from monitoring.store import Store, open_store
from pipeline.data import feedback_sets
from pipeline.data.datasets import FeedbackSplit
from pipeline.params import FeedbackParams, RegisterParams
from pipeline.registry.policy import decide
from pipeline.stages import download, evaluate, feedback, non_digits, preprocess, register, train
from pipeline.training.loop import add_feedback
from tests.synthetic import render_digits
from tests.test_register import CLEAN_MAIN, GOOD

EXPORT = FeedbackParams(out_dir=Path("fb"), metrics=Path("fb.json"), held_out_share=0.2)


def feedback_set(count: int, seed: int = 7) -> FeedbackSet:
    images, labels = render_digits(count, seed)
    return FeedbackSet(
        pixels=images,
        labels=labels.astype(np.int64),
        input_hash=np.array([input_hash(image) for image in images], dtype=str),
    )


def answer(store: Store, pixels: np.ndarray, label: str) -> None:
    """Log one prediction of `pixels` and give it accepted feedback `label`."""
    prediction = PredictionRecord(
        new_prediction_id(), "1", "canvas", pixels, 0, [0.1] * 10, uncertain=False
    )
    store.add_predictions([prediction])
    store.add_feedback(prediction.id, label, client_hash="test")
    store.review(FeedbackFilter(ids=(prediction.id,)), "accepted")


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'feedback-store.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def test_the_split_is_deterministic_and_never_puts_an_input_on_both_sides() -> None:
    accepted = feedback_set(300)
    sides = feedback_sets.split(accepted, 0.2)
    reversed_order = FeedbackSet(*(a[::-1] for a in (accepted.pixels, accepted.labels,
                                                     accepted.input_hash)))  # fmt: skip
    again = feedback_sets.split(reversed_order, 0.2)
    for side in feedback_sets.SIDES:
        assert sides[side].same_as(again[side]), "the split depends on the order of review"
    train_side, held = (set(sides[side].input_hash.tolist()) for side in feedback_sets.SIDES)
    assert not train_side & held
    assert train_side | held == set(accepted.input_hash.tolist())
    assert 0.1 < len(held) / len(accepted) < 0.3  # about 20 %, of 300 fixed inputs
    for data in sides.values():  # each row keeps its own input and label
        assert [input_hash(image) for image in data.images] == data.input_hash.tolist()


def test_no_store_gives_empty_sets_and_creates_no_database(tmp_path: Path) -> None:
    params = FeedbackParams(
        out_dir=tmp_path / "fb", metrics=tmp_path / "fb.json", held_out_share=0.2
    )
    figures = feedback_sets.export(params, f"sqlite:///{tmp_path / 'none.db'}")
    assert figures == dict.fromkeys(
        feedback_sets.counts({s: FeedbackSplit.empty() for s in feedback_sets.SIDES}), 0
    )
    assert not (tmp_path / "none.db").exists()
    assert all(
        len(FeedbackSplit.load(tmp_path / "fb" / f"{s}.npz")) == 0 for s in feedback_sets.SIDES
    )


def test_an_unchanged_store_leaves_the_outputs_untouched(
    tmp_path: Path, store: Store, store_url: str
) -> None:
    params = FeedbackParams(
        out_dir=tmp_path / "fb", metrics=tmp_path / "fb.json", held_out_share=0.5
    )
    accepted = feedback_set(20)
    for pixels, label in zip(accepted.pixels, accepted.labels, strict=True):
        answer(store, pixels, str(label))
    answer(store, accepted.pixels[0], "9")  # a duplicate input counts once, its first label
    outputs = [params.out_dir / "train.npz", params.out_dir / "held_out.npz", params.metrics]
    feedback_sets.export(params, store_url)

    def stamps() -> list[tuple[int, int]]:
        return [(path.stat().st_ino, path.stat().st_mtime_ns) for path in outputs]

    before = stamps()
    counts = feedback_sets.export(params, store_url)
    assert stamps() == before
    assert sum(counts.values()) == 20
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    answer(store, noise, NOT_A_DIGIT)
    after = feedback_sets.export(params, store_url)
    assert stamps() != before
    assert after["train_non_digits"] + after["held_out_non_digits"] == 1
    side = "held_out" if feedback_sets.held_out_side(input_hash(noise), 0.5) else "train"
    assert FeedbackSplit.load(params.out_dir / f"{side}.npz").non_digits().shape == (1, 28, 28)


def test_feedback_digits_are_repeated_and_its_non_digits_join_the_outliers() -> None:
    digits = feedback_set(4)
    odd = FeedbackSplit(
        np.concatenate([digits.pixels, np.zeros((2, 28, 28), np.uint8)]),
        np.concatenate([digits.labels, [-1, -1]]),
        np.array([*digits.input_hash, "a", "b"]),
    )
    mnist = (torch.zeros(10, 28, 28, dtype=torch.uint8), torch.zeros(10, dtype=torch.long))
    outliers = torch.zeros(5, 28, 28, dtype=torch.uint8)
    (images, labels), joined = add_feedback(mnist, outliers, odd, weight=3)
    assert len(images) == len(labels) == 10 + 3 * 4
    assert labels[10:].tolist() == digits.labels.tolist() * 3
    assert joined is not None and len(joined) == 5 + 2
    same, none = add_feedback(mnist, None, FeedbackSplit.empty(), weight=3)
    assert same is mnist and none is None  # no feedback: training exactly as without


@pytest.mark.slow
def test_training_evaluation_and_registry_use_the_feedback(
    params_file: Path, workdir: Path, store: Store, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted = feedback_set(60)
    for pixels, label in zip(accepted.pixels, accepted.labels, strict=True):
        answer(store, pixels, str(label))
    monkeypatch.setenv("MNIST_STORE_URL", store_url)
    argv = ["--params", str(params_file), "-S", "train.feedback_weight=2"]
    for stage in (download, preprocess, non_digits, feedback, train, evaluate, register):
        stage.main(argv)

    params = yaml.safe_load(params_file.read_text())
    sides = {
        s: FeedbackSplit.load(Path(params["feedback"]["out_dir"]) / f"{s}.npz")
        for s in feedback_sets.SIDES
    }
    assert len(sides["train"]) + len(sides["held_out"]) == 60 and len(sides["held_out"])
    run_id = json.loads(Path(params["train"]["run_info"]).read_text())["run_id"]
    client = MlflowClient()
    logged = client.get_run(run_id).data.params
    mnist_train = 300 - params["preprocess"]["val_size"]
    assert int(logged["train_size"]) == mnist_train + 2 * len(sides["train"])
    assert int(logged["feedback_digits"]) == len(sides["train"])

    metrics = json.loads(Path(params["evaluate"]["metrics"]).read_text())
    assert metrics["feedback_count"] == len(sides["held_out"])
    assert 0.0 <= metrics["feedback_accuracy"] <= 1.0
    assert client.get_run(run_id).data.metrics["feedback_accuracy"] == metrics["feedback_accuracy"]
    version = client.get_model_version_by_alias("mnist-cnn", "production")
    assert version.tags["feedback_count"] == str(len(sides["held_out"]))
    assert float(version.tags["feedback_accuracy"]) == pytest.approx(
        metrics["feedback_accuracy"], abs=1e-4
    )


GATE = RegisterParams(
    run_info="r.json", onnx_path="m.onnx", metrics="m.json", decision="d.json",
    min_test_accuracy=0.99, min_seed_accuracy=1.0, min_feedback_rows=20,
)  # fmt: skip
BETTER = GOOD | {"test_accuracy": 0.999, "held_out_non_digits_flagged": 1.0}


@pytest.mark.parametrize(
    ("count", "accuracy", "production", "action"),
    [
        (30, 0.80, 0.90, "none"),  # enough rows, worse than production: refused
        (19, 0.80, 0.90, "promote"),  # too few rows to judge
        (30, 0.90, 0.90, "promote"),  # as good as production
        (30, 0.95, 0.90, "promote"),
        (30, 0.80, None, "promote"),  # production has no figure to compare with
    ],
)
def test_the_gate_refuses_a_version_worse_on_held_out_feedback(
    count: int, accuracy: float, production: float | None, action: str
) -> None:
    metrics = BETTER | {"feedback_count": count, "feedback_accuracy": accuracy}
    decision = decide(metrics, CLEAN_MAIN, 0.995, GATE, True, production)
    assert decision.action == action, decision.reason
    if action == "none":
        assert (
            decision.reason == "held-out feedback accuracy 0.8000 < production's 0.9000 (30 rows)"
        )
