"""The command line every stage shares.

python -m pipeline.stages.<stage> [--params FILE] [-S section.key=value ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.params import DEFAULT_PARAMS_FILE, Params, load_params


def parse_stage_args(description: str, argv: list[str] | None = None) -> Params:
    """Parse the shared stage options, set up logging and return the validated parameters."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS_FILE, help="params file")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a parameter for this run (repeatable), as `dvc exp run -S` does",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return load_params(args.params, args.overrides)
