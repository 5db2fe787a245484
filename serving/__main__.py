"""Run the API: `python -m serving [--host H] [--port P]`.

The port defaults to $PORT (as Cloud Run sets it), else 8000.
"""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from serving.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    print(
        f"Serving the digit recognizer at http://{shown}:{args.port}/ (API docs: /docs)", flush=True
    )
    uvicorn.run(create_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
