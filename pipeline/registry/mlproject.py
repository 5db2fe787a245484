"""`MLproject`, written from `params.yaml` and `dvc.yaml`: its entry points' parameters and
defaults are the train and evaluate sections' own, and each entry point first has DVC build the
stages whose outputs its stage reads, so that it works on a fresh clone.

    python -m pipeline.registry.mlproject          # rewrite MLproject after changing params.yaml
    python -m pipeline.registry.mlproject --check  # exit 1 if MLproject is stale (tests run this)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel

from pipeline.params import DEFAULT_PARAMS_FILE, load_params

MLPROJECT = Path("MLproject")
DVC_FILE = Path("dvc.yaml")
OUTPUT_KINDS = ("outs", "metrics", "plots")
INTERPOLATION = re.compile(r"\$\{([\w.]+)\}")  # dvc.yaml's `${section.key}` from params.yaml
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
# Each entry point first has DVC build the stages its stage reads from (on a fresh clone: the
# data; for `evaluate`, a model trained with params.yaml's values when there is none yet, else
# the model `-e train` left). The train entry point records into the run that `mlflow run`
# creates. MLflow's parameter types have no integer: integer parameters are strings here and
# are checked as integers by the stages' parameter loader.
"""


def _parameter(section: BaseModel, name: str) -> dict[str, object]:
    annotation = type(section).model_fields[name].annotation
    value = getattr(section, name)
    if annotation is float:
        return {"type": "float", "default": value}
    return {"type": "string", "default": value}


def _paths(entries: list, params: dict) -> list[Path]:
    """The paths of dvc.yaml `deps`/`outs` entries (a path, or a path with options)."""

    def value(match: re.Match) -> str:
        node = params
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    names = [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]
    return [Path(INTERPOLATION.sub(value, name)) for name in names]


def upstream_outputs(stage: str, dvc_file: Path, params_file: Path) -> dict[str, list[Path]]:
    """The stages whose outputs `stage` reads (in dvc.yaml's order), each with those paths."""
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    params = yaml.safe_load(params_file.read_text())
    deps = _paths(stages[stage].get("deps", []), params)
    upstream = {}
    for name, body in stages.items():
        outs = _paths([o for kind in OUTPUT_KINDS for o in body.get(kind, [])], params)
        read = [d for d in deps if any(d == o or o in d.parents for o in outs)]
        if name != stage and read:
            upstream[name] = read
    return upstream


def _command(stage: str, names: tuple[str, ...], upstream: dict[str, list[Path]]) -> str:
    """Build what `stage` reads, then run it with the entry point's parameters. What another
    entry point makes (a model from `-e train`) is used as it is: DVC builds it only when it
    is missing, so that `-e evaluate` scores the model `-e train` just trained."""
    steps = []
    if data := [name for name in upstream if name not in EXPOSED]:
        steps.append(f"dvc repro {' '.join(data)}")
    for name in (name for name in upstream if name in EXPOSED):
        present = " && ".join(f"test -e {path}" for path in upstream[name])
        steps.append(f"({present} || dvc repro {name})")  # no braces: MLflow formats these
    overrides = " ".join(f"-S {stage}.{name}={{{name}}}" for name in names)
    return " && ".join([*steps, f"python -m pipeline.stages.{stage} {overrides}"])


def render(params_file: Path = DEFAULT_PARAMS_FILE) -> str:
    """MLproject's text, from `params_file` and the dvc.yaml beside it."""
    dvc_file = params_file.with_name(DVC_FILE.name)
    params = load_params(params_file)
    sections = {"train": params.train, "evaluate": params.evaluate}
    entry_points: dict[str, object] = {"main": {"command": "dvc repro"}}
    for stage, names in EXPOSED.items():
        upstream = upstream_outputs(stage, dvc_file, params_file)
        entry_points[stage] = {
            "parameters": {name: _parameter(sections[stage], name) for name in names},
            "command": _command(stage, names, upstream),
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
