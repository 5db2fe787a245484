"""Stage `drift`, run on demand: do the newest logged predictions still look like the reference?

The window is the newest `window_size` predictions in the API's store (MNIST_STORE_URL); the
check itself is `pipeline.drift.check`. Writes an HTML report and a JSON summary (a DVC metrics
file), records the scores in the store for the API's gauges, and exits 1 when a test fires.

    python -m pipeline.stages.drift [-S drift.window_size=1000]
    dvc repro drift/dvc.yaml
"""

from __future__ import annotations

import sys

from monitoring.settings import MonitoringSettings
from monitoring.store import open_store
from pipeline.cli import parse_stage_args
from pipeline.drift.check import run


def main(argv: list[str] | None = None) -> int:
    params = parse_stage_args(__doc__ or "", argv).drift
    store = open_store(MonitoringSettings().store_url)
    try:
        return run(params, store)
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
