"""Stage `preprocess`: raw IDX files → uint8 arrays, with a seeded stratified validation split.

The validation images come out of the 60k training images; the 10k test images are kept apart,
untouched, for the final evaluation only.
"""

from __future__ import annotations

from pipeline.cli import parse_stage_args
from pipeline.data.splits import preprocess


def main(argv: list[str] | None = None) -> None:
    preprocess(parse_stage_args(__doc__ or "", argv).preprocess)


if __name__ == "__main__":
    main()
