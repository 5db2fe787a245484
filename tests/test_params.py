"""The one params loader: validation and `-S` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.params import load_params

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_project_params_are_valid() -> None:
    params = load_params(PARAMS)
    assert params.train.epochs == 10
    assert params.registration.min_test_accuracy >= 0.99


def test_overrides_are_parsed_as_yaml() -> None:
    params = load_params(
        PARAMS, ["train.epochs=3", "train.channels=[8, 16]", "train.augment.degrees=0"]
    )
    assert params.train.epochs == 3
    assert params.train.channels == [8, 16]
    assert params.train.augment.degrees == 0


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("train.epoch=3", KeyError),
        ("nosuch.epochs=3", KeyError),
        ("train.epochs", ValueError),
        ("train.epochs=0", ValidationError),
    ],
)
def test_bad_overrides_are_refused(override: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        load_params(PARAMS, [override])


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="project root"):
        load_params(tmp_path / "params.yaml")
