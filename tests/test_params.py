"""The one params loader: validation and `-S` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.projects._project_spec import load_project
from pydantic import ValidationError

from pipeline.params import load_params
from pipeline.registry import mlproject

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_project_params_are_valid() -> None:
    params = load_params(PARAMS)
    assert params.train.epochs == 7
    assert params.train.convs_per_block == [1, 2, 2] and params.train.processes == "auto"
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


def test_mlproject_is_written_from_params_yaml(tmp_path: Path, monkeypatch) -> None:
    """MLproject's parameters are params.yaml's, typed as MLflow reads them; a stale one fails."""
    assert (PARAMS.parent / "MLproject").read_text() == mlproject.render(
        PARAMS.parent / "params.yaml"
    ), "MLproject is stale: run `python -m pipeline.registry.mlproject`"
    project = load_project(str(PARAMS.parent))
    params = load_params(PARAMS.parent / "params.yaml")
    for stage, section in (("train", params.train), ("evaluate", params.evaluate)):
        declared = project.get_entry_point(stage).parameters
        assert set(declared) == set(mlproject.EXPOSED[stage])
        for name, parameter in declared.items():
            assert str(parameter.default) == str(getattr(section, name)), name
            assert parameter.type == ("float" if isinstance(getattr(section, name), float)
                                      else "string"), name  # fmt: skip

    (tmp_path / "params.yaml").write_text(
        (PARAMS.parent / "params.yaml").read_text().replace("max_lr: 0.02", "max_lr: 0.03")
    )
    (tmp_path / "MLproject").write_text((PARAMS.parent / "MLproject").read_text())
    (tmp_path / "dvc.yaml").write_text((PARAMS.parent / "dvc.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="out of date"):
        mlproject.main(["--check"])
    mlproject.main([])
    mlproject.main(["--check"])
    assert "default: 0.03" in (tmp_path / "MLproject").read_text()
