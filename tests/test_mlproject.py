"""MLproject's entry points on a fresh clone: each builds what its stage reads, nothing else."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.io import read_json, sha256_of
from pipeline.registry.mlproject import upstream_outputs
from tests.conftest import PROJECT_ROOT, project_env, tiny_params


def test_each_entry_point_builds_the_stages_its_stage_reads() -> None:
    dvc_file, params_file = PROJECT_ROOT / "dvc.yaml", PROJECT_ROOT / "params.yaml"
    train = upstream_outputs("train", dvc_file, params_file)
    assert list(train) == ["preprocess", "non_digits", "feedback"]
    assert train["non_digits"] == [Path("data/non_digits/train.npz")]
    evaluate = upstream_outputs("evaluate", dvc_file, params_file)
    assert list(evaluate) == ["preprocess", "non_digits", "feedback", "train"]
    assert Path("models/model.onnx") in evaluate["train"]


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def fresh_clone(root: Path, raw_mnist: tuple[Path, dict[str, str]]) -> dict[str, str]:
    """What `git clone` of this working tree gives (its tracked and new files, no DVC outputs),
    with tiny parameters committed; returns its environment."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():  # not a file deleted in the working tree
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, root / name)
    params = tiny_params(*raw_mnist)
    params["evaluate"]["seed_images_dir"] = "tests/data"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = project_env(root)
    run(["git", "init", "-q", "-b", "main"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "a fresh clone"], root, env)
    return env


@pytest.mark.slow
def test_train_then_evaluate_entry_points_on_a_fresh_clone(tmp_path: Path, raw_mnist) -> None:
    env = fresh_clone(tmp_path, raw_mnist)
    assert not (tmp_path / "data").exists() and not (tmp_path / "models/model.onnx").exists()
    output = run(["mlflow", "run", ".", "-e", "train", "--env-manager", "local",
                  "-P", "epochs=1"], tmp_path, env)  # fmt: skip
    for stage in ("download", "preprocess", "non_digits", "feedback"):
        assert f"Running stage '{stage}'" in output, output
    assert "Running stage 'train'" not in output  # the entry point's own parameters train
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    (trained,) = client.search_runs(experiments, "tags.`mlflow.project.entryPoint` = 'train'")
    assert trained.data.params["epochs"] == "1" and "val_accuracy" in trained.data.metrics
    model = sha256_of(tmp_path / "models/model.onnx")

    # `-e evaluate` scores the model `-e train` left, not one DVC trains anew.
    output = run(["mlflow", "run", ".", "-e", "evaluate", "--env-manager", "local"], tmp_path, env)
    assert "Running stage 'train'" not in output, output
    metrics = read_json(tmp_path / "metrics/evaluate.json")
    assert metrics["onnx_sha256"] == model and "test_accuracy" in metrics
