"""The operators' commands run in the API image: from exactly the sources its Dockerfile copies,
without torch or the rest of the pipeline. (`test_container.py` runs them in the built image.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.test_dockerfile import copied_sources

HEAVY = {"torch", "torchvision", "dvc", "matplotlib", "sklearn"}  # as test_serving_isolation
# The checkout's editable install would find any module missing from the copy in the checkout:
# without its finder, only the copy is importable, as in the image.
ONLY_THE_COPY = (
    "import sys\n"
    "def theirs(finder): return getattr(finder, '__module__', '').startswith('__editable__')\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if not theirs(f)]\n"
    "sys.path_hooks[:] = [h for h in sys.path_hooks if not theirs(h)]\n"
    "sys.path_importer_cache.clear()\n"
)
# Runs a CLI's `main`, then prints which heavy packages the run imported.
RUN = ONLY_THE_COPY + (
    "import importlib; main = importlib.import_module(sys.argv[1]).main\n"
    "try:\n    main(sys.argv[2:])\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
    f"print('heavy:', *sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY)!r})))"
)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """What the image's build copies from the project, and nothing else."""
    root = tmp_path / "image"
    for name in copied_sources():
        source, target = PROJECT_ROOT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    return root


def run_cli(root: Path, env: dict[str, str], module: str, *argv: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", RUN, module, *argv],
        cwd=root, env={**os.environ, **env, "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "heavy:", result.stdout
    return result.stdout


def test_the_image_carries_the_registry_cli_and_no_more_of_the_pipeline(
    image_tree: Path, registry_copy: dict[str, str], tmp_path: Path
) -> None:
    # The rest of the pipeline is not there to be imported by accident.
    missing = subprocess.run(
        [sys.executable, "-c", ONLY_THE_COPY + "import pipeline.params"],
        cwd=image_tree, env={**os.environ, "PYTHONPATH": str(image_tree)}, capture_output=True,
    )  # fmt: skip
    assert missing.returncode != 0
    commands = "pipeline.registry.commands"
    assert "production" in run_cli(image_tree, registry_copy, commands, "list")
    run_cli(image_tree, registry_copy, commands, "promote", "1", "--reason", "from the image")
    assert "register stage" in run_cli(image_tree, registry_copy, commands, "history")
    # `compare` reads the prediction log too (monitoring, which the image carries whole), once
    # the API (here its migration command) has made it.
    store = {"MNIST_STORE_URL": f"sqlite:///{tmp_path / 'predictions.db'}"}
    run_cli(image_tree, store, "monitoring.migrate", "upgrade")
    compared = run_cli(image_tree, {**registry_copy, **store}, commands, "compare")
    assert "holds the alias 'challenger'" in compared


def test_the_image_carries_the_feedback_review(image_tree: Path, tmp_path: Path) -> None:
    store = {"MNIST_STORE_URL": f"sqlite:///{tmp_path / 'predictions.db'}"}
    output = run_cli(image_tree, store, "monitoring.review", "list")
    assert "0 feedback" in output
    sheet = tmp_path / "sheet.html"
    run_cli(image_tree, store, "monitoring.review", "sheet", "--out", str(sheet))
    assert "No feedback matches" in sheet.read_text()
