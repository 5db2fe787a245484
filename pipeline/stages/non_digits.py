"""Stage `non_digits`: draw the generated non-digits (`pipeline.datagen.non_digit_families`) for
training (the families not held out) and for validation and test (every family), through the
API's own preprocessing, each split from its own seed and its own split's digits.
"""

from __future__ import annotations

from pipeline.cli import parse_stage_args
from pipeline.datagen.non_digit_families import run


def main(argv: list[str] | None = None) -> None:
    run(parse_stage_args(__doc__ or "", argv).non_digits)


if __name__ == "__main__":
    main()
