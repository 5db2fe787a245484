"""The review CLI: list, accept and reject feedback by id, by filter, or all pending."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitoring.records import FeedbackFilter
from monitoring.review import main
from monitoring.store import Store, open_store
from tests.test_monitoring_store import record

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'predictions.db'}"


@pytest.fixture
def store(url: str) -> Store:
    """Five answers with feedback: two say 1 (one input sent twice), one says not a digit."""
    opened = open_store(url)
    answers = [
        record(digit=7, fill=1),
        record(digit=7, fill=1),
        record(digit=8, fill=2),
        record(digit=3, fill=3, version="4"),
        record(digit=3, fill=4),
    ]
    opened.add_predictions(answers)
    for answer, label in zip(answers, ["1", "1", "not_a_digit", "3", "5"], strict=True):
        opened.add_feedback(answer.id, label, "client")
    yield opened
    opened.close()


def review(url: str, *argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", url, *argv])
    return exit_info.value.code


def statuses(store: Store) -> list[str]:
    return [row.status for row in store.list_feedback()]


def test_list_with_filters(store: Store, url: str, capsys: pytest.CaptureFixture) -> None:
    assert review(url, "list") == 0
    out = capsys.readouterr().out
    assert "5 feedback, 4 distinct inputs" in out
    assert review(url, "list", "--label", "1") == 0
    assert "2 feedback, 1 distinct inputs" in capsys.readouterr().out
    assert review(url, "list", "--predicted", "3", "--version", "4") == 0
    out = capsys.readouterr().out
    assert "1 feedback, 1 distinct inputs" in out and store.list_feedback()[3].prediction_id in out


def test_accept_and_reject_by_id_filter_and_all(
    store: Store, url: str, capsys: pytest.CaptureFixture
) -> None:
    rows = store.list_feedback()
    assert review(url, "reject", rows[4].prediction_id) == 0
    assert review(url, "accept", "--label", "not_a_digit") == 0
    assert statuses(store) == ["pending", "pending", "accepted", "pending", "rejected"]
    assert review(url, "accept", "--all-pending") == 0
    assert "3 feedback accepted." in capsys.readouterr().out
    assert statuses(store) == ["accepted"] * 4 + ["rejected"]
    accepted = store.accepted_feedback()
    assert sorted(accepted.labels.tolist()) == [-1, 1, 3]  # the input sent twice counts once


def test_refuses_to_act_on_nothing_or_on_unknown_ids(
    store: Store, url: str, capsys: pytest.CaptureFixture
) -> None:
    assert review(url, "accept") == 2
    assert "Say which feedback to accept" in capsys.readouterr().err
    assert review(url, "reject", "0" * 32) == 1
    assert "No feedback for 000" in capsys.readouterr().err
    assert statuses(store) == ["pending"] * 5
    assert store.list_feedback(FeedbackFilter(status="accepted")) == []


def test_runs_as_a_module_with_the_store_from_the_environment(store: Store, url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitoring.review", "list", "--status", "pending"],
        env={**os.environ, "MNIST_STORE_URL": url, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "5 feedback, 4 distinct inputs" in result.stdout
