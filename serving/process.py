"""Process-wide tuning of a server process, done once by the server's entry point (each worker
of `python -m serving`, see `serving.workers`) and never by `create_app`, whose apps may share a
process (tests build many)."""

from __future__ import annotations

import gc
import os

from starlette.formparsers import MultiPartParser

from serving.limits import MULTIPART_OVERHEAD, batch_body_limit
from serving.settings import ServingSettings


def tune(settings: ServingSettings) -> None:
    """Before the app is built: MLflow's limits, the upload spool."""
    os.environ.update(settings.registry_limits())  # read by MLflow at every request
    # Starlette spools an upload over 1 MB to a temporary file. Bodies are capped by the app
    # (`serving.limits`), so a spool this size keeps every upload in memory: nothing a client
    # sends touches the disk.
    MultiPartParser.spool_max_size = max(
        MultiPartParser.spool_max_size, batch_body_limit(settings) + MULTIPART_OVERHEAD
    )


def freeze_what_is_loaded() -> None:
    """Once the app has started: everything loaded so far (FastAPI, the app) lives as long as
    the process. Freezing it spares the garbage collector from scanning it on every full
    collection, which otherwise stalls requests for tens of milliseconds under load."""
    gc.freeze()
