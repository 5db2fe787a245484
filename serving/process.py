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
    """Once the app has started, and again once its first model load has ended: everything
    loaded so far (FastAPI, the app; then MLflow, ONNX Runtime and the model, about 300,000
    objects) lives as long as the process. Freezing it spares the garbage collector from scanning
    it on every full collection: left unfrozen, the MLflow client alone made each full collection
    20-100 ms, several times a second under load, the whole of the p99 latency at c=32. What is
    garbage by then is collected first, so that it is not kept for ever."""
    gc.collect()
    gc.freeze()
