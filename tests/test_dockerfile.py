"""What can be checked of the image without a Docker engine: lint, and what it copies and runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_copied_paths_exist_and_are_not_dockerignored() -> None:
    text = DOCKERFILE.read_text()
    ignored = set((PROJECT_ROOT / ".dockerignore").read_text().split())
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            assert (PROJECT_ROOT / source).exists(), source
            assert source not in ignored, source


def test_image_runs_the_api_on_the_platform_port() -> None:
    text = DOCKERFILE.read_text()
    assert 'CMD ["python", "-m", "serving"]' in text
    assert "PORT=8080" in text and "EXPOSE 8080" in text and "HOST=0.0.0.0" in text
    assert re.search(r"^USER \d+", text, flags=re.MULTILINE), "the API must not run as root"
