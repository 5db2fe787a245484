"""Sharing through a DVC remote: one clone runs the pipeline and pushes, another pulls and has
every output without running download, preprocess or train again."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mnist_core.classifier import DigitClassifier
from pipeline.io import sha256_of
from serving.model_store import read_onnx_model
from tests.conftest import PROJECT_ROOT, project_env, tiny_params

pytestmark = pytest.mark.slow

COPIED = (
    "pipeline", "mnist_core", "monitoring", "tests/data", "dvc.yaml", ".dvcignore", ".gitignore",
)  # fmt: skip
CACHED = ("data/raw", "data/processed", "models/model.pt", "models/model.onnx")
# Both check stores outside DVC (the registry; the feedback store) on every `dvc repro`.
ALWAYS_CHANGED = {"feedback": ["always changed"], "register": ["always changed"]}


def completed(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = completed(args, cwd, env)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def files_of(root: Path) -> dict[str, str]:
    """The MD5 (DVC's content address) of every file of the cached outputs, by path."""
    hashes = {}
    for output in CACHED:
        path = root / output
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            hashes[str(file.relative_to(root))] = hashlib.md5(file.read_bytes()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, raw_mnist) -> dict[str, object]:
    """Clone A: the project with tiny params, reproduced, committed and pushed to a local
    directory remote. Its raw-data source is deleted afterwards, so a clone that ran
    `download` again would fail."""
    base = tmp_path_factory.mktemp("dvc-remote")
    root, storage, source = base / "a", base / "storage", base / "source"
    shutil.copytree(raw_mnist[0], source)
    for name in COPIED:
        target = root / name
        if (PROJECT_ROOT / name).is_dir():
            shutil.copytree(
                PROJECT_ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(PROJECT_ROOT / name, target)
    params = tiny_params(source, raw_mnist[1])
    params["evaluate"]["seed_images_dir"] = "tests/data"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = project_env(root)
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    shutil.copy(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")  # the shipped config
    output = run(["dvc", "repro"], root, env)
    assert "Running stage 'train'" in output
    run(["dvc", "remote", "add", "-d", "storage", str(storage)], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "pipeline outputs, remote"], root, env)
    pushed_output = run(["dvc", "push"], root, env)
    shutil.rmtree(source)
    return {
        "root": root,
        "storage": storage,
        "files": files_of(root),
        "run_info": json.loads((root / "models" / "run.json").read_text()),
        "push_output": pushed_output,
    }


def test_push_sends_every_cached_output_and_no_git_tracked_one(pushed) -> None:
    root, storage = pushed["root"], pushed["storage"]
    env = project_env(root)
    assert "files pushed" in pushed["push_output"], pushed["push_output"]
    in_sync = run(["dvc", "status", "--cloud", "--json"], root, env)
    assert json.loads(in_sync) == {}, in_sync
    # DVC 3 keeps each file under files/md5/<first two hex digits>/<the rest>.
    stored = {"".join(path.parts[-2:]) for path in storage.rglob("*") if path.is_file()}
    missing = [name for name, md5 in pushed["files"].items() if md5 not in stored]
    assert not missing, f"not in the remote: {missing}"
    git_files = run(["git", "ls-files"], root, env).splitlines()
    assert "dvc.lock" in git_files and "models/run.json" in git_files
    assert "metrics/evaluate.json" in git_files and "plots/train/history.csv" in git_files
    assert not [f for f in git_files if f.startswith("data/") and f != "data/.gitignore"]
    assert "models/model.onnx" not in git_files and "models/model.pt" not in git_files


def test_a_clone_pulls_the_outputs_and_does_not_train_again(pushed, tmp_path: Path) -> None:
    clone = tmp_path / "b"
    env = project_env(clone)
    run(["git", "clone", "-q", str(pushed["root"]), str(clone)], tmp_path, env)
    assert not (clone / "models" / "model.onnx").exists()
    assert "storage" in run(["dvc", "remote", "list"], clone, env)  # committed in .dvc/config

    run(["dvc", "pull"], clone, env)
    assert files_of(clone) == pushed["files"]
    assert json.loads(run(["dvc", "status", "--json"], clone, env)) == ALWAYS_CHANGED

    output = run(["dvc", "repro"], clone, env)
    assert re.findall(r"Running stage '(\w+)'", output) == ["feedback", "register"], output
    for stage in ("download", "preprocess", "non_digits", "train", "evaluate"):
        assert f"Stage '{stage}' didn't change, skipping" in output, output
    assert files_of(clone) == pushed["files"]

    # B's tracking store was empty: `register` logged A's ONNX file there, not a new model.
    store = env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert len(runs) == 1, [r.data.tags.get("mlflow.runName") for r in runs]
    assert runs[0].data.tags["relogged_from_run"] == pushed["run_info"]["run_id"]
    assert runs[0].data.tags["onnx_sha256"] == sha256_of(pushed["root"] / "models/model.onnx")
    assert "epochs" not in runs[0].data.params  # no training run

    production = client.get_model_version_by_alias("mnist-cnn", "production")
    assert production.run_id == runs[0].info.run_id
    served = DigitClassifier(read_onnx_model("mnist-cnn", production.version, store))
    with np.load(clone / "data" / "processed" / "test.npz") as test:
        images = test["images"]
    trained = DigitClassifier(pushed["root"] / "models" / "model.onnx")
    np.testing.assert_allclose(served.predict_proba(images), trained.predict_proba(images))


def test_pull_without_a_remote_says_how_to_set_one(pushed, tmp_path: Path) -> None:
    clone = tmp_path / "c"
    env = project_env(clone)
    run(["git", "clone", "-q", str(pushed["root"]), str(clone)], tmp_path, env)
    run(["dvc", "remote", "remove", "storage"], clone, env)

    pulled = completed(["dvc", "pull"], clone, env)
    assert pulled.returncode != 0
    assert "No remote provided and no default remote set" in pulled.stderr, pulled.stderr
    assert "models/model.onnx" in pulled.stderr
    pushed_without = completed(["dvc", "push"], clone, env)
    assert pushed_without.returncode != 0
    assert "dvc remote add -d" in pushed_without.stderr, pushed_without.stderr


def test_pull_from_a_remote_that_lacks_the_data_names_the_missing_outputs(
    pushed, tmp_path: Path
) -> None:
    clone = tmp_path / "d"
    env = project_env(clone)
    run(["git", "clone", "-q", str(pushed["root"]), str(clone)], tmp_path, env)
    empty = tmp_path / "empty-storage"
    empty.mkdir()
    run(["dvc", "remote", "modify", "--local", "storage", "url", str(empty)], clone, env)

    pulled = completed(["dvc", "pull"], clone, env)
    assert pulled.returncode != 0
    assert "do not exist neither locally nor on remote" in pulled.stderr, pulled.stderr
    for output in CACHED:
        assert output in pulled.stderr, pulled.stderr
    assert not (clone / "models" / "model.onnx").exists()
