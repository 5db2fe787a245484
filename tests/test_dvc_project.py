"""The project as users drive it: `dvc repro`, metrics/plots, `dvc exp run` and `mlflow run`,
in a temporary copy of the project with tiny parameters."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT_ROOT, tiny_params

pytestmark = pytest.mark.slow

COPIED = ("pipeline", "mnist_core", "tests/data", "dvc.yaml", "MLproject", ".dvcignore")


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, raw_mnist) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("project")
    for name in COPIED:
        source, target = PROJECT_ROOT / name, root / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    params = tiny_params(*raw_mnist)
    params["evaluate"]["seed_images_dir"] = "tests/data"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MNIST_ARTIFACT_ROOT": str(root / "mlartifacts"),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    env.pop("MLFLOW_RUN_ID", None)
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n")
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "tiny project"], root, env)
    return root, env


def test_dvc_repro_runs_every_stage_once(project) -> None:
    root, env = project
    output = run(["dvc", "repro"], root, env)
    for stage in ("download", "preprocess", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in output
    assert "up to date" in run(["dvc", "repro"], root, env)

    metrics = run(["dvc", "metrics", "show"], root, env)
    assert "test_accuracy" in metrics and "best_val_accuracy" in metrics
    plots = run(["dvc", "plots", "show", "--out", "plots-html"], root, env)
    assert (root / "plots-html" / "index.html").is_file(), plots

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("mnist-cnn", "production").version


def test_dvc_exp_run_with_a_changed_param(project) -> None:
    root, env = project
    output = run(["dvc", "exp", "run", "-S", "train.epochs=1"], root, env)
    assert "Running stage 'train'" in output
    assert "Running stage 'download'" not in output  # data stages do not depend on train params
    table = csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], root, env)))
    experiments = [row for row in table if row["typ"] == "branch_base"]
    assert experiments and experiments[-1]["train.epochs"] == "1"


def test_mlflow_run_train_entry_point(project) -> None:
    root, env = project
    run(
        ["mlflow", "run", ".", "-e", "train", "--env-manager", "local", "-P", "epochs=1"], root, env
    )
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "params.epochs = '1'"
    )
    assert runs and any("val_accuracy" in r.data.metrics for r in runs)
