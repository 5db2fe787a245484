"""The challenger's answers in the prediction store, and `mnist-registry compare` on them: known
rows and feedback in, the agreement, `uncertain` shares and accuracies out."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mnist_core.labels import NOT_A_DIGIT
from monitoring.records import (
    FeedbackFilter,
    PredictionRecord,
    ShadowAnswer,
    new_prediction_id,
    utc_now,
)
from monitoring.shadow_report import compare
from monitoring.store import Store, open_store
from pipeline.registry.commands import main as registry_cli
from tests.conftest import with_more_versions

MODEL = "mnist-cnn"
# (production digit, production uncertain, challenger digit, challenger uncertain, feedback)
# for ten predictions of version 1 shadowed by version 2; feedback as (label, status).
KNOWN = [
    (7, False, 7, False, ("7", "accepted")),  # both right
    (7, False, 7, False, ("1", "pending")),  # pending: not reviewed
    (7, False, 7, False, ("1", "rejected")),  # rejected: not reviewed
    (7, False, 7, False, None),
    (7, False, 7, False, None),
    (7, False, 7, False, None),
    (4, False, 9, False, ("9", "accepted")),  # the challenger right
    (4, False, 9, False, None),
    (1, False, 7, False, ("7", "accepted")),  # the challenger right
    (3, True, 3, False, (NOT_A_DIGIT, "accepted")),  # production flagged it: production right
]


def prediction(digit: int, uncertain: bool, version: str = "1", fill: int = 0) -> PredictionRecord:
    pixels = np.full((28, 28), fill, np.uint8)
    probabilities = np.full(10, 0.01, np.float32)
    probabilities[digit] = 0.91
    return PredictionRecord(new_prediction_id(), version, "canvas", pixels, digit,
                            probabilities, uncertain)  # fmt: skip


def fill_known(store: Store) -> None:
    """KNOWN, plus what compare must leave out: a prediction the challenger did not answer, an
    answer whose prediction was never written, and one of another challenger (version 3)."""
    records, answers = [], []
    for index, (digit, uncertain, theirs, their_uncertain, _) in enumerate(KNOWN):
        records.append(prediction(digit, uncertain, fill=index))
        answers.append(ShadowAnswer(records[-1].id, "2", theirs, 0.9, their_uncertain))
    unanswered, other = prediction(5, False, fill=50), prediction(5, False, fill=51)
    answers += [
        ShadowAnswer(new_prediction_id(), "2", 0, 0.9, False),
        ShadowAnswer(other.id, "3", 6, 0.5, True),
    ]
    store.add_predictions([*records, unanswered, other], answers)
    for record, (*_, given) in zip(records, KNOWN, strict=True):
        if given is not None:
            label, status = given
            store.add_feedback(record.id, label, client_hash="c" * 64)
            if status != "pending":
                store.review(FeedbackFilter(ids=(record.id,)), status)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = open_store(f"sqlite:///{tmp_path / 'predictions.db'}")
    yield opened
    opened.close()


def test_compare_counts_agreement_uncertain_and_reviewed_accuracy(store: Store) -> None:
    fill_known(store)
    (mine,) = compare(store, "2")
    assert (mine.production.version, mine.challenger.version) == ("1", "2")
    assert (mine.compared, mine.agreed) == (10, 7)
    assert (mine.production.uncertain, mine.challenger.uncertain) == (1, 0)
    assert mine.disagreements == [(4, 9, 2), (1, 7, 1)]
    assert mine.reviewed == 4
    assert (mine.production.right, mine.challenger.right) == (2, 3)
    figures = mine.as_dict()
    assert figures["agreement"] == 0.7
    assert figures["production"]["feedback_accuracy"] == 0.5
    assert figures["challenger"]["feedback_accuracy"] == 0.75
    # Every pair of versions, the most compared first.
    assert [(c.challenger.version, c.compared) for c in compare(store)] == [("2", 10), ("3", 1)]
    assert compare(store, "9") == []


def test_pruning_takes_the_answers_whose_prediction_went(store: Store) -> None:
    old = utc_now() - timedelta(days=100)
    gone = replace(prediction(1, False), created_at=old)
    kept = prediction(2, False)
    store.add_predictions(
        [gone, kept],
        [ShadowAnswer(gone.id, "2", 1, 0.9, False, old), ShadowAnswer(kept.id, "2", 2, 0.9, False)],
    )
    assert store.prune(max_rows=10, max_age=timedelta(days=90)) == 1
    (left,) = compare(store)
    assert left.compared == 1
    with store.engine.connect() as connection:
        ids = connection.exec_driver_sql("SELECT prediction_id FROM shadow_answers").all()
    assert ids == [(kept.id,)]


@pytest.fixture
def registry(registry_copy: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """The tiny registry with a version 2 of the same model."""
    return with_more_versions(registry_copy, monkeypatch)


def test_the_compare_command_prints_both_sides(
    registry: MlflowClient, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(store.engine.url)
    registry_cli(["compare", "--store", url])
    assert "No version of mnist-cnn holds the alias 'challenger'" in capsys.readouterr().out
    registry.set_registered_model_alias(MODEL, "challenger", "2")
    registry_cli(["compare", "--store", url])
    assert "has no answer of it yet" in capsys.readouterr().out
    fill_known(store)
    registry_cli(["compare", "--store", url])
    text = capsys.readouterr().out
    assert "production version 1 against challenger version 2" in text
    assert "10 answers compared" in text and "agreement             70.0 %" in text
    assert "uncertain             production 10.0 %, challenger 0.0 %" in text
    assert "production → challenger: 4 → 9 (2), 1 → 7 (1)" in text
    assert "4 accepted answers" in text
    assert "production 50.0 % (2/4), challenger 75.0 % (3/4)" in text
    assert "challenger version 3" not in text  # the alias names 2
    registry_cli(["compare", "--store", url, "--json"])
    body = json.loads(capsys.readouterr().out)
    assert (body["production"], body["challenger"]) == ("1", "2")
    assert [c["agreement"] for c in body["comparisons"]] == [0.7]
