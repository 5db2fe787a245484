"""`MLproject`, written from `params.yaml`: its entry points' parameters and defaults are the
train and evaluate sections' own, so the two files cannot drift apart.

    python -m pipeline.registry.mlproject          # rewrite MLproject after changing params.yaml
    python -m pipeline.registry.mlproject --check  # exit 1 if MLproject is stale (tests run this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel

from pipeline.params import DEFAULT_PARAMS_FILE, load_params

MLPROJECT = Path("MLproject")
# The parameters `mlflow run -P` may set, per entry point and params.yaml section.
EXPOSED = {
    "train": ("epochs", "batch_size", "max_lr", "weight_decay", "label_smoothing", "seed"),
    "evaluate": ("batch_size",),
}
HEADER = """\
# Written by `python -m pipeline.registry.mlproject` from params.yaml: edit that file, then
# rerun this.
#
# DVC owns the pipeline; these entry points call its stages so that `mlflow run` works too:
#   mlflow run . --env-manager local
#   mlflow run . -e train --env-manager local -P epochs=1
# The train entry point records into the run that `mlflow run` creates. MLflow's parameter
# types have no integer: integer parameters are strings here and are checked as integers by
# the stages' parameter loader.
"""


def _parameter(section: BaseModel, name: str) -> dict[str, object]:
    annotation = type(section).model_fields[name].annotation
    value = getattr(section, name)
    if annotation is float:
        return {"type": "float", "default": value}
    return {"type": "string", "default": value}


def _command(stage: str, names: tuple[str, ...]) -> str:
    overrides = " ".join(f"-S {stage}.{name}={{{name}}}" for name in names)
    return f"python -m pipeline.stages.{stage} {overrides}"


def render(params_file: Path = DEFAULT_PARAMS_FILE) -> str:
    params = load_params(params_file)
    sections = {"train": params.train, "evaluate": params.evaluate}
    entry_points: dict[str, object] = {"main": {"command": "dvc repro"}}
    for stage, names in EXPOSED.items():
        command = _command(stage, names)
        entry_points[stage] = {
            "parameters": {name: _parameter(sections[stage], name) for name in names},
            "command": f"dvc repro preprocess && {command}" if stage == "train" else command,
        }
    body = yaml.safe_dump(
        {"name": "mnist-cnn", "entry_points": entry_points}, sort_keys=False, width=100
    )
    return HEADER + "\n" + body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if MLproject is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not MLPROJECT.is_file() or MLPROJECT.read_text() != text:
            sys.exit(
                "MLproject is out of date with params.yaml: "
                "run `python -m pipeline.registry.mlproject`"
            )
        return
    MLPROJECT.write_text(text)


if __name__ == "__main__":
    main()
