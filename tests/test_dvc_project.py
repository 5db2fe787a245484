"""The project as users drive it: `dvc repro`, metrics/plots, `dvc exp run` and `mlflow run`,
in a temporary copy of the project with tiny parameters."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from mlflow.tracking import MlflowClient

from monitoring.store import open_store
from tests.conftest import PROJECT_ROOT, project_env, relocate_store, tiny_params
from tests.test_retrain import answer, feedback_set

pytestmark = pytest.mark.slow

COPIED = (
    "pipeline", "mnist_core", "monitoring", "tests/data", "dvc.yaml", "drift/dvc.yaml",
    "MLproject", ".dvcignore",
)  # fmt: skip
DRIFT = "drift/dvc.yaml:drift"  # the on-demand check, in a dvc.yaml of its own


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


class Project(NamedTuple):
    root: Path
    env: dict[str, str]


def copy_project(source: Path, target: Path) -> Project:
    """A copy of a project folder (its git repository, DVC cache, outputs and stores), with its
    own environment; the copied MLflow store names the copied artifacts."""
    shutil.copytree(source, target, symlinks=True)
    if (target / "mlflow.db").exists():
        relocate_store(target / "mlflow.db", source, target)
    return Project(target, project_env(target))


@pytest.fixture(scope="module")
def blank_project(tmp_path_factory: pytest.TempPathFactory, raw_mnist) -> Path:
    """The project as a fresh clone has it, with tiny parameters: its sources committed in a new
    git repository with DVC initialised, nothing run. Never changed: tests copy it."""
    root = tmp_path_factory.mktemp("blank-project") / "project"
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
    # The project's own stores (MLflow's, and the predictions and feedback one, empty until a
    # test writes to it) stay out of git.
    env = project_env(root)
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/predictions.db*\n")
    run(["git", "init", "-q", "-b", "main"], root, env)  # the branch `register.branch` names
    run(["dvc", "init", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "tiny project"], root, env)
    return root


@pytest.fixture(scope="module")
def first_repro(blank_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the blank project after its first `dvc repro`, and that command's output.
    Never changed: tests copy it."""
    root, env = copy_project(blank_project, tmp_path_factory.mktemp("reproduced") / "project")
    return root, run(["dvc", "repro"], root, env)


@pytest.fixture(scope="module")
def project(first_repro: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A reproduced project shared by the tests that leave it as they found it (each undoes
    what it changes), whatever their order."""
    return copy_project(first_repro[0], tmp_path_factory.mktemp("shared") / "project")


@pytest.fixture
def project_copy(first_repro: tuple[Path, str], tmp_path: Path) -> Project:
    """A reproduced project of the test's own, to change freely."""
    return copy_project(first_repro[0], tmp_path / "project")


def test_dvc_repro_runs_every_stage_once(first_repro: tuple[Path, str], project: Project) -> None:
    stages = ("download", "preprocess", "non_digits", "feedback", "train", "evaluate", "register")
    for stage in stages:
        assert f"Running stage '{stage}'" in first_repro[1]
    root, env = project
    # Only the two that look outside DVC: `feedback` (the store, unchanged: nothing downstream
    # runs) and `register` (the registry).
    again = run(["dvc", "repro"], root, env)
    assert re.findall(r"Running stage '(\w+)'", again) == ["feedback", "register"], again

    metrics = run(["dvc", "metrics", "show"], root, env)
    assert "test_accuracy" in metrics and "best_val_accuracy" in metrics
    html = root.parent / "plots-html"  # outside the project: its git tree stays clean
    plots = run(["dvc", "plots", "show", "--out", str(html)], root, env)
    assert (html / "index.html").is_file(), plots

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("mnist-cnn", "production").version


def test_dvc_exp_run_never_moves_production(project_copy: Project) -> None:
    """An experiment with a changed parameter trains, registers a version with its lineage and
    gives it `challenger`; the version in production (a clean tree's model) stays there."""
    root, env = project_copy
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    served = client.get_model_version_by_alias("mnist-cnn", "production").version

    output = run(["dvc", "exp", "run", "-S", "train.epochs=1"], root, env)
    assert "Running stage 'train'" in output
    assert "Running stage 'download'" not in output  # data stages do not depend on train params
    assert client.get_model_version_by_alias("mnist-cnn", "production").version == served
    challenger = client.get_model_version_by_alias("mnist-cnn", "challenger")
    assert int(challenger.version) > int(served)
    assert challenger.tags["dvc_experiment"] not in ("", "-")
    assert challenger.tags["policy"] == "challenger"
    assert "experiments never move production" in challenger.tags["policy_reason"]
    table = csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], root, env)))
    experiments = [row for row in table if row["typ"] == "branch_base"]
    assert experiments and experiments[-1]["train.epochs"] == "1"


def test_mlflow_run_train_entry_point(blank_project: Path, tmp_path: Path) -> None:
    """As the README has it, on a fresh clone: the entry point makes the data it trains on."""
    root, env = copy_project(blank_project, tmp_path / "project")
    run(
        ["mlflow", "run", ".", "-e", "train", "--env-manager", "local", "-P", "epochs=1"], root, env
    )
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "params.epochs = '1' and tags.`mlflow.project.entryPoint` = 'train'",
    )
    assert len(runs) == 1 and "val_accuracy" in runs[0].data.metrics


# `register` runs on every `dvc repro`: it checks the registry, which lives outside DVC.
ALWAYS_CHANGED = {"feedback": ["always changed"], "register": ["always changed"]}
# The pipeline's stages only: the drift check's own dvc.yaml is always changed, run or not.
PIPELINE_STATUS = ["dvc", "status", "--json", "dvc.yaml"]


def import_closure(module: str) -> set[Path]:
    """The project's source files that importing `module` executes (packages' `__init__` too)."""
    files: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # each package on the way is imported too
            package_init = PROJECT_ROOT.joinpath(*parts[:depth], "__init__.py")
            if package_init.is_file():
                files.add(package_init)
        path = PROJECT_ROOT.joinpath(*parts).with_suffix(".py")
        if not path.is_file() or path in files:
            continue
        files.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
    return {path.relative_to(PROJECT_ROOT) for path in files}


@pytest.mark.parametrize(
    "stage",
    ["download", "preprocess", "non_digits", "feedback", "train", "evaluate", "register", "drift"],
)
def test_each_stage_depends_on_every_module_it_imports(stage: str) -> None:
    dvc_file = PROJECT_ROOT / ("drift/dvc.yaml" if stage == "drift" else "dvc.yaml")
    deps = yaml.safe_load(dvc_file.read_text())["stages"][stage]["deps"]
    covered = [Path(dep) for dep in deps if "${" not in dep]
    imported = import_closure(f"pipeline.stages.{stage}")
    assert Path(f"pipeline/stages/{stage}.py") in imported
    missing = [
        str(path)
        for path in imported
        if not any(path == dep or dep in path.parents for dep in covered)
    ]
    assert not missing, f"dvc.yaml: stage {stage} imports {missing} but does not depend on them"


def test_editing_an_imported_module_makes_its_stages_stale(project: Project) -> None:
    root, env = project
    assert json.loads(run(PIPELINE_STATUS, root, env)) == ALWAYS_CHANGED
    shared = root / "pipeline" / "io.py"
    original = shared.read_text()
    try:
        shared.write_text(original + "\n# an edit\n")
        stale = json.loads(run(PIPELINE_STATUS, root, env))
        assert set(stale) == {
            "download",
            "preprocess",
            "non_digits",
            "feedback",
            "train",
            "evaluate",
            "register",
        }
    finally:
        shared.write_text(original)
    assert json.loads(run(PIPELINE_STATUS, root, env)) == ALWAYS_CHANGED


def test_a_corrupted_raw_file_is_detected_and_fetched_again(project: Project) -> None:
    root, env = project
    raw = root / "data" / "raw" / "t10k-labels-idx1-ubyte"
    good = raw.read_bytes()
    raw.unlink()  # a new file: never write through a link into DVC's cache
    raw.write_bytes(b"\0" * len(good))
    stale = json.loads(run(["dvc", "status", "--json"], root, env))
    assert "download" in stale, stale
    output = run(["dvc", "repro"], root, env)
    # Restored from DVC's run cache, or fetched and verified again when the cache lacks it.
    assert "Stage 'download' is cached" in output or "Running stage 'download'" in output
    assert raw.read_bytes() == good


def test_the_drift_check_runs_only_when_asked_for(project_copy: Project) -> None:
    root, env = project_copy
    assert not (root / "metrics" / "drift.json").exists()  # `dvc repro` did not run it
    output = run(["dvc", "repro", "drift/dvc.yaml"], root, env)
    assert f"Running stage '{DRIFT}'" in output
    # An empty store: no verdict, and a report that says so.
    assert json.loads((root / "metrics" / "drift.json").read_text())["status"] == (
        "not_enough_traffic"
    )
    assert "no verdict" in (root / "reports" / "drift.html").read_text()
    assert "not_enough_traffic" in run(["dvc", "metrics", "show", "--json"], root, env)


def test_accepted_feedback_retrains_and_an_unchanged_store_does_not(
    project_copy: Project,
) -> None:
    root, env = project_copy
    lock = root / "dvc.lock"
    before = yaml.safe_load(lock.read_text())["stages"]["feedback"]["outs"]
    store = open_store(env["MNIST_STORE_URL"])
    try:
        accepted = feedback_set(30, seed=11)
        for pixels, label in zip(accepted.pixels, accepted.labels, strict=True):
            answer(store, pixels, str(label))
    finally:
        store.close()
    output = run(["dvc", "repro"], root, env)
    ran = re.findall(r"Running stage '(\w+)'", output)
    assert ran == ["feedback", "train", "evaluate", "register"], output
    assert yaml.safe_load(lock.read_text())["stages"]["feedback"]["outs"] != before
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert 0 < metrics["feedback_count"] < 30
    again = run(["dvc", "repro"], root, env)
    assert re.findall(r"Running stage '(\w+)'", again) == ["feedback", "register"], again
