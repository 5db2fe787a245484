"""The API stands alone: no training code, no torch, installable as `.[serve]` (locked in
requirements/serve.txt)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loadgen import free_port, post_picture, wait_until_ready
from tests.conftest import PROJECT_ROOT, SEED_IMAGES

# (scipy is left out: MLflow imports it whenever it is installed, as it is in the dev set-up; the
# fresh `.[serve]` environment below has none of these at all.)
TRAINING_STACK = ("torch", "torchvision", "pipeline", "dvc", "matplotlib", "sklearn")

PREDICT_AND_LIST_MODULES = """
import sys
from fastapi.testclient import TestClient
from serving.app import create_app

app = create_app()
with TestClient(app) as client:
    app.state.service.store.checked.wait(timeout=60)
    seven = open(sys.argv[1], "rb").read()
    response = client.post("/predict", files={"file": ("num_7.png", seven, "image/png")})
    assert response.status_code == 200, response.text
print(" ".join(sorted(sys.modules)))
"""


def test_serving_a_prediction_loads_no_training_code(trained_registry: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PREDICT_AND_LIST_MODULES, str(SEED_IMAGES / "num_7.png")],
        env={**os.environ, **trained_registry},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded = {name.split(".")[0] for name in result.stdout.split()}
    assert "onnxruntime" in loaded and "serving" in loaded
    assert not loaded & set(TRAINING_STACK)


@pytest.mark.slow
def test_serve_extra_installs_and_serves_without_torch(
    trained_registry: dict[str, str], tmp_path: Path
) -> None:
    """`.[serve]` at its locked versions (requirements/serve.txt, with hashes, as the image
    installs it) in a fresh virtual environment, then `python -m serving`."""
    uv = Path(sys.executable).parent / "uv"  # `make setup` installs it (requirements/uv.txt)
    assert uv.is_file(), f"{uv} is missing: run `make setup`"
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, venv], check=True,
                   timeout=120)  # fmt: skip
    python = str(venv / "bin" / "python")
    requirements = PROJECT_ROOT / "requirements"
    for arguments in (
        ["--require-hashes", "-r", requirements / "serve.txt", "-r", requirements / "build.txt"],
        ["--no-deps", "--no-build-isolation", PROJECT_ROOT],  # the package alone, as the image
    ):
        install = subprocess.run([uv, "pip", "install", "--quiet", "--python", python, *arguments],
                                 capture_output=True, text=True, timeout=900)  # fmt: skip
        assert install.returncode == 0, install.stderr[-3000:]
    missing = subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=60)
    assert missing.returncode != 0  # torch is not installed there at all

    port = free_port()
    server = subprocess.Popen(
        [python, "-m", "serving", "--port", str(port)],
        # Not the project folder, nor a PYTHONPATH to it: the installed package must be enough.
        env={name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
        | trained_registry,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/ready", server, timeout=60)
        seven = (SEED_IMAGES / "num_7.png").read_bytes()
        answer = post_picture(f"http://127.0.0.1:{port}/predict", "num_7.png", seven)
        assert answer["model_version"] and 0 <= answer["digit"] <= 9
    finally:
        server.terminate()
        server.wait(timeout=30)
