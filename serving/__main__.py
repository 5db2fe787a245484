"""Run the API: `python -m serving [--host H] [--port P] [--workers N]`.

The port defaults to $PORT (as Cloud Run sets it), else 8000. Each worker process loads its own
copy of the model and follows the registry alias on its own; gunicorn's arbiter supervises them
(`serving.workers`). Nothing heavy is imported here: the workers listen first, then import the
app and load the model (`serving.starting`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from serving.settings import ServingSettings
from serving.workers import serve


def main(argv: list[str] | None = None) -> None:
    defaults = ServingSettings()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--workers", type=int, default=defaults.workers, help="processes (default $MNIST_WORKERS)"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if defaults.model_path is None and (missing := defaults.missing_local_store()):
        sys.exit(f"error: {missing}")
    # Workers read their settings from the environment: tell them how many share the cores.
    os.environ["MNIST_WORKERS"] = str(args.workers)
    settings = defaults.model_copy(update={"workers": args.workers})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Alembic's context lines at every open of the store; `monitoring.migrate` says what it does.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    print(
        f"Serving the digit recognizer at http://{shown}:{args.port}/ (API docs: /docs)", flush=True
    )
    serve(args.host, args.port, settings, args.access_log)


if __name__ == "__main__":
    main()
