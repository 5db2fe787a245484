"""Build the API image with podman, without a Docker engine or a registry of base images.

    python -m deploy.container base                 # mnist-base:bookworm, from Debian's packages
    python -m deploy.container build                # mnist-api, on that base
    python -m deploy.container build --target baked --model models/production

The base is made with debootstrap from the apt mirror this machine already uses, so nothing is
pulled from an image registry. pip inside the build gets this machine's index and CA bundle as
build secrets (they stay out of the image). Storage is podman's `vfs` and RUN steps are chrooted:
this works as root where podman cannot create containers (no cgroups, no user namespaces).
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BASE_TAG = "mnist-base:bookworm"
IMAGE_TAG = "mnist-api"
SUITE = "bookworm"  # Debian 12: Python 3.11
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
APT_SOURCES = Path("/etc/apt")


def podman(storage_root: Path | None = None) -> list[str]:
    """The podman command line: vfs storage, in `storage_root` (a private store) if given."""
    command = ["podman", "--storage-driver=vfs"]
    if storage_root is not None:
        command += ["--root", str(storage_root / "root"), "--runroot", str(storage_root / "run")]
    return command


def apt_mirror(suite: str = SUITE, sources: Path = APT_SOURCES) -> str:
    """The first Debian archive URI this machine's apt sources use for `suite`."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or path.suffix not in (".list", ".sources", ""):
            continue
        text = path.read_text()
        if path.suffix == ".sources":  # deb822: stanzas of `Field: value`
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.MULTILINE))
                if (
                    "deb" in fields.get("Types", "").split()
                    and suite in fields.get("Suites", "").split()
                ):
                    return fields["URIs"].split()[0]
        else:  # one-line style: deb [options] URI suite components
            for line in text.splitlines():
                words = re.sub(r"\[.*?\]", "", line.split("#")[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1]
    raise RuntimeError(
        f"No apt source for Debian {suite} in {sources}: pass the archive URI with --mirror."
    )


def make_base(
    tag: str = BASE_TAG, mirror: str | None = None, storage_root: Path | None = None
) -> str:
    """A minimal Debian root file system with Python, imported as image `tag`."""
    mirror = mirror or apt_mirror()
    with tempfile.TemporaryDirectory(prefix="mnist-base-") as scratch:
        root = Path(scratch) / "root"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(root),
                mirror,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # What an image does not need: downloaded packages and package lists.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([*podman(storage_root), "import", "-", tag], stdin=tar.stdout, check=True)
        if tar.wait() != 0:
            raise RuntimeError(f"tar of {root} failed")
    return tag


def pip_settings() -> dict[str, str]:
    """pip's index and CA bundle on this machine: its config files, then its environment."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():  # `section.key='value'`, later lines take precedence
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in ("index-url", "extra-index-url", "cert"):
            settings[name] = value.strip("'\"")
    return settings


def pip_secrets(directory: Path) -> list[str]:
    """`podman build` arguments that give pip in the build this machine's index and CA bundle.

    Indexes on the local disk (`file:` URLs) are left out: the build cannot see them.
    """
    settings = pip_settings()
    lines = ["[global]"]
    arguments = []
    for name in ("index-url", "extra-index-url"):
        urls = [url for url in settings.get(name, "").split() if url.startswith("http")]
        if urls:
            lines.append(f"{name} = {' '.join(urls)}")
    if cert := settings.get("cert"):
        lines.append("cert = /run/secrets/ca.pem")
        arguments += ["--secret", f"id=ca.pem,src={cert}"]
    config = directory / "pip.conf"
    config.write_text("\n".join(lines) + "\n")
    return [*arguments, "--secret", f"id=pip.conf,src={config}"]


def build_image(
    tag: str = IMAGE_TAG,
    base: str = BASE_TAG,
    context: Path = PROJECT_ROOT,
    target: str | None = None,
    model: str | None = None,
    storage_root: Path | None = None,
    extra: Sequence[str] = (),
) -> str:
    """`podman build` of the Dockerfile in `context` on image `base`, tagged `tag`."""
    with tempfile.TemporaryDirectory(prefix="mnist-build-") as scratch:
        command = [
            *podman(storage_root),
            "build",
            "--isolation=chroot",
            "--network=host",
            "--format=docker",  # the OCI format has no HEALTHCHECK
            "--build-arg",
            f"BASE_IMAGE={base}",
            *pip_secrets(Path(scratch)),
            "--tag",
            tag,
        ]
        if target:
            command += ["--target", target]
        if model:
            command += ["--build-arg", f"MODEL={model}"]
        command += [*extra, str(context)]
        print("+", shlex.join(command), flush=True)
        subprocess.run(command, check=True)
    return tag


def image_size(tag: str, storage_root: Path | None = None) -> int:
    """The image's size in bytes, as `podman images` reports it."""
    output = subprocess.run(
        [*podman(storage_root), "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(output.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    base = commands.add_parser("base", help=f"make the base image ({BASE_TAG})")
    base.add_argument("--tag", default=BASE_TAG)
    base.add_argument("--mirror", help="Debian archive URI (default: this machine's apt source)")
    build = commands.add_parser("build", help=f"build the API image ({IMAGE_TAG})")
    build.add_argument("--tag", default=IMAGE_TAG)
    build.add_argument("--base", default=BASE_TAG, help="base image (made first if missing)")
    build.add_argument("--target", help="`baked`: serve a model copied into the image")
    build.add_argument("--model", help="for --target baked: the model's path in the context")
    args = parser.parse_args(argv)
    if shutil.which("podman") is None:
        sys.exit("podman is not installed: apt-get install podman debootstrap")
    if args.command == "base":
        make_base(args.tag, args.mirror)
        return
    exists = subprocess.run([*podman(), "image", "exists", args.base], check=False)
    if exists.returncode != 0 and args.base == BASE_TAG:
        make_base(args.base)
    build_image(args.tag, args.base, target=args.target, model=args.model)
    print(f"{args.tag}: {image_size(args.tag) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
