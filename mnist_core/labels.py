"""The labels a picture can have, defined once: the ten digits, and "not a digit".

On the wire (the API's feedback, the review command line) and in the prediction store a label is a
string: "0" to "9", or `NOT_A_DIGIT`. In the datasets the pipeline writes (numpy arrays) it is an
integer: 0 to 9, or `NOT_A_DIGIT_CODE`. `label_code` and `label_name` convert between the two at
that one boundary.
"""

from __future__ import annotations

NUM_CLASSES = 10
DIGITS: tuple[str, ...] = tuple(str(digit) for digit in range(NUM_CLASSES))
NOT_A_DIGIT = "not_a_digit"
LABELS: tuple[str, ...] = (*DIGITS, NOT_A_DIGIT)
NOT_A_DIGIT_CODE = -1


def label_code(label: str) -> int:
    """A label's integer in the pipeline's arrays: the digit, or `NOT_A_DIGIT_CODE`."""
    if label == NOT_A_DIGIT:
        return NOT_A_DIGIT_CODE
    if label not in DIGITS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
    return int(label)


def label_name(code: int) -> str:
    """The wire and store spelling of an array label."""
    if code == NOT_A_DIGIT_CODE:
        return NOT_A_DIGIT
    if not 0 <= code < NUM_CLASSES:
        raise ValueError(f"label code must be 0 to {NUM_CLASSES - 1} or {NOT_A_DIGIT_CODE}")
    return str(code)
