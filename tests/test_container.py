"""The API image, built and run without a Docker engine: podman builds the Dockerfile on a Debian
base made offline by debootstrap (`deploy/container.py`), with the tiny test model baked in; the
image's own command then runs chrooted in the mounted image, as the image's user, on loopback.

podman cannot start containers here (no cgroups), hence the chroot. Everything lives in a
private podman store under pytest's temporary directory, removed at the end, but for the Debian
base: it does not change with the project and debootstrap takes minutes, so it is made once per
machine and kept as an image archive in ~/.cache/mnist-mlops (delete it to make it again), as
an engine keeps a base image it pulled: loading it took 7.7 s where debootstrap took 103 s.

The build is not layered (`--layers=false`): with podman's vfs storage, which copies the whole
file system for every layer, a layered build measured 465 s cold and 475 s with every step
cached, against 130 s unlayered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.loadgen import free_port, post_picture, stop_group, wait_until_ready
from deploy.container import (
    BASE_PACKAGES,
    SUITE,
    apt_mirror,
    build_image,
    image_size,
    make_base,
    podman,
)
from serving.app import create_app
from serving.model_store import read_local_model
from serving.settings import ServingSettings
from tests.conftest import PROJECT_ROOT, SEED_IMAGES, download_production
from tests.test_dockerfile import copied_sources

pytestmark = [pytest.mark.slow, pytest.mark.container]
MAX_IMAGE_BYTES = 700e6  # measured 524 MB; torch alone would add more than this
BASE_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-mlops"


def _cannot_run_here() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "podman's chroot builds and chroot(8) need Linux and root"
    missing = [tool for tool in ("podman", "debootstrap", "chroot") if not shutil.which(tool)]
    if missing:  # not a reason to skip: CI installs them (.ci/run), a developer can too
        pytest.fail(f"{', '.join(missing)} not installed: apt-get install podman debootstrap")
    return None


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private podman store (images, layers), deleted after the module's tests."""
    if reason := _cannot_run_here():
        if os.environ.get("CI"):
            pytest.fail(f"the container test must run in CI, but {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("podman")
    yield root
    subprocess.run([*podman(root), "image", "umount", "--all"], capture_output=True)
    # vfs keeps a full copy of every layer (gigabytes of small files), which takes minutes to
    # delete on a busy disk: that is left to a process of its own rather than to the test run.
    subprocess.Popen(["rm", "-rf", str(root)], start_new_session=True)


def base_image(store: Path, tag: str = "mnist-base:test") -> str:
    """`deploy.container.make_base`'s Debian base in `store`: loaded from the machine's cache of
    it, else made and added to the cache (one archive per suite, packages and mirror)."""
    made_of = f"{SUITE} {' '.join(BASE_PACKAGES)} {apt_mirror()}"
    archive = BASE_CACHE / f"base-{hashlib.sha256(made_of.encode()).hexdigest()[:16]}.tar"
    if archive.is_file():
        subprocess.run([*podman(store), "load", "--input", str(archive)], check=True,
                       capture_output=True)  # fmt: skip
        return tag
    make_base(tag, storage_root=store)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
    save = [*podman(store), "save", "--format", "docker-archive", "--output", str(partial), tag]
    subprocess.run(save, check=True, capture_output=True)
    partial.rename(archive)  # whole or not at all, whoever else makes it at the same time
    return tag


@pytest.fixture(scope="module")
def baked_image(
    store: Path, trained_registry: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """The `baked` image serving the tiny test model's MLflow directory; returns its tag and
    the model directory."""
    context = tmp_path_factory.mktemp("context")
    for name in ("Dockerfile", ".dockerignore", *copied_sources()):
        source = PROJECT_ROOT / name
        (context / name).parent.mkdir(parents=True, exist_ok=True)  # requirements/serve.txt
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, context / name)
    model = download_production(
        trained_registry["MLFLOW_TRACKING_URI"], context / "models" / "production"
    )
    base = base_image(store)
    tag = build_image(
        "mnist-api:test",
        base,
        context,
        target="baked",
        model="models/production",
        storage_root=store,
        extra=["--layers=false"],  # vfs copies the whole file system per layer: see above
    )
    return tag, model


def image_config(store: Path, tag: str) -> dict:
    inspect = [*podman(store), "image", "inspect", tag]
    return json.loads(subprocess.run(inspect, capture_output=True, check=True).stdout)[0]


@contextlib.contextmanager
def mounted(store: Path, tag: str) -> Iterator[Path]:
    mount = [*podman(store), "image", "mount", tag]
    root = Path(subprocess.run(mount, capture_output=True, text=True, check=True).stdout.strip())
    try:
        yield root
    finally:
        subprocess.run([*podman(store), "image", "umount", tag], capture_output=True, check=True)


def in_image(root: Path, config: dict, command: list[str], **environment: str) -> list[str]:
    """`command` run as the image would run it: chrooted, as its user, in its working directory,
    with its environment (and nothing of this machine's)."""
    user = config["Config"]["User"]
    workdir = config["Config"].get("WorkingDir") or "/"
    return [
        shutil.which("env") or "env",
        "-i",
        *config["Config"]["Env"],
        *(f"{name}={value}" for name, value in environment.items()),
        shutil.which("chroot") or "chroot",
        f"--userspec={user}",
        str(root),
        "/bin/sh",
        "-c",
        'cd "$0" && exec "$@"',
        workdir,
        *command,
    ]


@pytest.fixture(scope="module")
def running_image(store: Path, baked_image: tuple[str, Path]) -> Iterator[tuple[str, int, dict]]:
    """The image's own command serving on a loopback port; yields its URL, pid and config."""
    tag, _ = baked_image
    config = image_config(store, tag)
    port = free_port()
    with mounted(store, tag) as root:
        log_path = store / "server.log"
        with log_path.open("wb") as output:
            process = subprocess.Popen(
                in_image(root, config, config["Config"]["Cmd"], HOST="127.0.0.1", PORT=str(port)),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}/ready", process, timeout=90, log=log_path)
            yield f"http://127.0.0.1:{port}", process.pid, {**config, "root": root}
        finally:
            stop_group(process)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.load(response)


def test_image_serves_the_baked_model_as_its_user(
    running_image: tuple[str, int, dict], baked_image: tuple[str, Path]
) -> None:
    url, pid, config = running_image
    assert get_json(f"{url}/ready")["ready"] is True
    onnx_model, run_id = read_local_model(baked_image[1])
    info = get_json(f"{url}/model")
    assert info["version"] == "sha256:" + hashlib.sha256(onnx_model).hexdigest()[:12]
    assert (info["source"], info["alias"], info["run_id"]) == ("/app/model", None, run_id)

    seven = (SEED_IMAGES / "num_7.png").read_bytes()
    prediction = post_picture(f"{url}/predict", "7.png", seven)
    # The tiny test model is barely trained: the check is that the image answers exactly what
    # the project's own app answers with the same model file on this machine.
    settings = ServingSettings(MNIST_MODEL_PATH=str(baked_image[1]))
    with TestClient(create_app(settings)) as client:
        files = {"file": ("7.png", seven, "image/png")}
        expected = client.post("/predict", files=files).json()
    # The same answer, bar the id each answer gets for the prediction log.
    assert prediction.pop("prediction_id") != expected.pop("prediction_id")
    assert prediction == expected
    assert prediction["model_version"] == info["version"]

    # The server runs as the image's user, which is not root.
    uid, gid = (int(part) for part in config["Config"]["User"].split(":"))
    assert uid != 0 and gid != 0
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(uid)] * 4, status


def test_image_healthcheck_passes_on_the_port_in_use(running_image: tuple[str, int, dict]) -> None:
    url, _, config = running_image
    check = config["Healthcheck"]["Test"]
    assert check[0] == "CMD"
    port = url.rsplit(":", 1)[1]
    result = subprocess.run(
        in_image(config["root"], config, check[1:], PORT=port), capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode()
    wrong_port = in_image(config["root"], config, check[1:], PORT=str(free_port()))
    assert subprocess.run(wrong_port, capture_output=True, timeout=30).returncode != 0


def test_image_has_onnxruntime_and_no_torch(
    store: Path, baked_image: tuple[str, Path], running_image: tuple[str, int, dict]
) -> None:
    config = running_image[2]
    probe = (
        "import importlib.util as u; "
        "print(bool(u.find_spec('onnxruntime')), bool(u.find_spec('torch')))"
    )
    result = subprocess.run(
        in_image(config["root"], config, ["python", "-c", probe]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["True", "False"], result.stderr
    size = image_size(baked_image[0], store)
    print(f"image size: {size / 1e6:.0f} MB")
    assert size < MAX_IMAGE_BYTES


def test_the_operators_commands_run_in_the_image(running_image: tuple[str, int, dict]) -> None:
    """`mnist-registry` and `mnist-feedback` run in the image, as the README says."""
    config = running_image[2]
    for command, expected in ((["mnist-registry", "--help"], "history"),
                              (["mnist-feedback", "list"], "0 feedback")):  # fmt: skip
        result = subprocess.run(in_image(config["root"], config, command),
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0 and expected in result.stdout, result.stderr
