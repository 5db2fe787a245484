"""Schemathesis against the live API's own OpenAPI schema: no 5xx for anything, and every
response conforms to its documented status codes, content type and schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

pytestmark = pytest.mark.slow

# Operations that take input get up to this many valid and as many invalid requests each.
EXAMPLES_PER_OPERATION = 300
MIN_REQUESTS = 1000
# A schema-valid upload may still be refused, with a documented answer: a file of bytes that is
# not a picture (415), a picture with no digit in it (422), one too large (413); feedback on an
# id no prediction has (404), on one answered already (409), or past the client's budget (429).
# Every other check stays as schemathesis has it, 5xx and undocumented answers included.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", 404, 409, 413, 415, 422, 429]}
        }
    }
)


def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, base_url: str) -> int:
    """Send generated requests of one kind to one operation, validating each; how many."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case: schemathesis.Case) -> None:
        nonlocal sent
        case.call_and_validate(base_url=base_url, timeout=30)
        sent += 1

    call()
    return sent


def test_every_operation_conforms(live_server_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server_url}/openapi.json", config=CONFIG)
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        # Invalid requests only where the schema can say what is invalid: a JSON body. (A
        # multipart file is bytes whatever it holds: "a number instead of a file" is still a
        # file, and a GET without parameters has no invalid form.)
        if "application/json" in str(operation.body):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            sent[f"{operation.label} ({mode.value})"] = fuzz(operation, mode, live_server_url)
    print(f"schemathesis requests: {sent}")
    assert sum(sent.values()) >= MIN_REQUESTS, sent
    for label in ("POST /predict", "POST /predict/batch", "POST /predict/pixels"):
        assert sent[f"{label} (positive)"] > 100, sent
    assert sent["POST /predict/pixels (negative)"] > 100, sent
    assert sent["POST /feedback (negative)"] > 100, sent
