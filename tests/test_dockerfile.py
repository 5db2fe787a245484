"""What can be checked of the image from its Dockerfile: lint, what it copies, in which order, and
how it runs. (`test_container.py` builds and runs it.)"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def copied_sources() -> list[str]:
    """The context paths the Dockerfile copies (not from other stages, not a build argument)."""
    sources = []
    for line in instructions():
        words = line.split()
        if words[0] == "COPY" and not any(word.startswith("--from") for word in words):
            sources += [word for word in words[1:-1] if "$" not in word]
    return sources


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (last matching rule wins)."""
    ignored = False
    for rule in (PROJECT_ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        pattern = rule.removeprefix("!").rstrip("/").removeprefix("**/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes) or any(
            fnmatch.fnmatch(part, pattern) for part in parts if rule.startswith(("**/", "!**/"))
        ):
            ignored = not rule.startswith("!")
    return ignored


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_copied_paths_exist_and_are_in_the_context() -> None:
    assert set(copied_sources()) >= {
        "requirements/serve.txt",
        "pyproject.toml",
        "mnist_core",
        "monitoring",
        "serving",
    }
    for source in copied_sources():
        assert (PROJECT_ROOT / source).exists(), source
        assert not dockerignored(source), source


def test_context_leaves_out_the_heavy_and_private_files() -> None:
    for path in (".venv/bin/python", "data/raw/x", "mlflow.db", "mlartifacts/1/x", ".git/HEAD",
                 ".dvc/cache/x", "tests/test_api.py", "bench/loadgen.py", "models/model.pt",
                 "serving/__pycache__/app.cpython-311.pyc"):  # fmt: skip
        assert dockerignored(path), path
    assert not dockerignored("models/model.onnx")  # what the `baked` target copies by default
    assert not dockerignored("models/production/MLmodel")


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    """Editing the code must not reinstall the dependencies: their layer comes first."""
    lines = instructions()
    install = next(i for i, line in enumerate(lines) if "--requirement" in line)
    sources = r"COPY (mnist_core|monitoring|serving) "
    code = [i for i, line in enumerate(lines) if re.match(sources, line)]
    assert code and install < min(code)
    assert lines[install - 1].startswith("COPY requirements/serve.txt")  # the lock file
    assert "--require-hashes" in lines[install]
    assert "torch" not in DOCKERFILE.read_text().replace("no torch", "")
    assert "--no-deps" in next(line for line in lines[min(code) :] if "pip install" in line)


def test_image_runs_the_api_as_a_user_on_the_platform_port() -> None:
    text = DOCKERFILE.read_text()
    assert 'CMD ["python", "-m", "serving"]' in text
    assert "PORT=8080" in text and "EXPOSE 8080" in text and "HOST=0.0.0.0" in text
    assert re.search(r"^USER [1-9]\d*:[1-9]\d*$", text, flags=re.MULTILINE), "not as root"
    assert re.search(r"^HEALTHCHECK .*\{os.environ\['PORT'\]\}/ready", "\n".join(instructions()),
                     flags=re.MULTILINE)  # fmt: skip
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)


def test_baked_target_serves_the_copied_model() -> None:
    lines = instructions()
    baked = lines.index("FROM runtime AS baked")
    stage = lines[baked + 1 : baked + 4]
    assert stage == ["ARG MODEL=models/model.onnx", "COPY ${MODEL} /app/model",
                     "ENV MNIST_MODEL_PATH=/app/model"]  # fmt: skip
    assert lines[-1] == "FROM runtime", "the default target must be the registry image"
