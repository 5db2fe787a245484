"""Each endpoint accepts exactly what its OpenAPI schema says: a request outside the schema (an
unknown field, a number written as text, a flag written `1`) gets 422 and a sentence, and what
the API takes (a digit label sent as a number) is in the schema too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.schemas import EXAMPLE_PIXELS
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, ready_client

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()
PICTURE = {"file": ("num_7.png", SEVEN, "image/png")}
PICTURES = [("files", ("num_7.png", SEVEN, "image/png"))]
SOME_ID = "0" * 32


@pytest.fixture(scope="module")
def client(trained_registry: dict[str, str]) -> Iterator[TestClient]:
    with ready_client(create_app(ServingSettings(**trained_registry))) as test_client:
        yield test_client


# (case, path, request arguments, a phrase of the sentence): each is outside the schema.
OUTSIDE_THE_SCHEMA = [
    ("pixels: an unknown field", "/predict/pixels",
     {"json": {"pixels": EXAMPLE_PIXELS, "invert": True}}, "invert: there is no such field"),
    ("pixels: a grey level as text", "/predict/pixels",
     {"json": {"pixels": [["255"] * 28, *EXAMPLE_PIXELS[1:]]}}, "numbers, not text"),
    ("pixels: a grey level as a boolean", "/predict/pixels",
     {"json": {"pixels": [[True] * 28, *EXAMPLE_PIXELS[1:]]}}, "numbers, not text"),
    ("pixels: model_view=on", "/predict/pixels?model_view=on",
     {"json": {"pixels": EXAMPLE_PIXELS}}, "model_view: write true or false"),
    ("predict: an unknown form field", "/predict",
     {"files": PICTURE, "data": {"label": "7"}}, "label: there is no such field"),
    ("predict: a source not listed", "/predict",
     {"files": PICTURE, "data": {"source": "camera"}}, "source"),
    ("predict: model_view=1", "/predict?model_view=1", {"files": PICTURE}, "true or false"),
    ("predict: model_view=yes", "/predict?model_view=yes", {"files": PICTURE}, "true or false"),
    ("batch: an unknown form field", "/predict/batch",
     {"files": PICTURES, "data": {"source": "upload"}}, "source: there is no such field"),
    ("batch: no files", "/predict/batch", {"data": {}}, "No file was uploaded"),
    ("predict: the file as a text field", "/predict",
     {"files": {"file": (None, "not a file")}}, "file: send a file here"),
    ("feedback: an unknown field", "/feedback",
     {"json": {"prediction_id": SOME_ID, "label": "7", "user": "me"}}, "user: there is no such"),
    ("feedback: a label as a boolean", "/feedback",
     {"json": {"prediction_id": SOME_ID, "label": True}}, "label"),
    ("feedback: a label as a fraction", "/feedback",
     {"json": {"prediction_id": SOME_ID, "label": 7.5}}, "label"),
    ("feedback: an id as a number", "/feedback",
     {"json": {"prediction_id": 7, "label": "7"}}, "prediction_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "request_args", "phrase"),
    [case[1:] for case in OUTSIDE_THE_SCHEMA],
    ids=[case[0] for case in OUTSIDE_THE_SCHEMA],
)
def test_a_request_outside_the_schema_is_refused_with_a_sentence(
    client: TestClient, path: str, request_args: dict, phrase: str
) -> None:
    response = client.post(path, **request_args)
    assert response.status_code == 422, response.text
    assert phrase in response.json()["detail"]


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_an_upload_that_is_not_multipart_gets_415(client: TestClient, path: str) -> None:
    # What schemathesis sent for two empty files: a url-encoded form, no file in it.
    response = client.post(path, data={"files": ["", ""]})
    assert response.status_code == 415, response.text
    assert "send the pictures as multipart/form-data" in response.json()["detail"]


# (case, path, request arguments): each is inside the schema and answered.
INSIDE_THE_SCHEMA = [
    ("pixels: the schema's own example", "/predict/pixels", {"json": {"pixels": EXAMPLE_PIXELS}}),
    # A JSON Schema integer is a number without a fraction, written so or not.
    ("pixels: 255.0 for 255", "/predict/pixels",
     {"json": {"pixels": [[float(level) for level in row] for row in EXAMPLE_PIXELS]}}),
    ("pixels: model_view=true", "/predict/pixels?model_view=true",
     {"json": {"pixels": EXAMPLE_PIXELS}}),
    ("predict: source canvas, model_view=false", "/predict?model_view=false",
     {"files": PICTURE, "data": {"source": "canvas"}}),
    ("batch: one file", "/predict/batch", {"files": PICTURES}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "request_args"),
    [case[1:] for case in INSIDE_THE_SCHEMA],
    ids=[case[0] for case in INSIDE_THE_SCHEMA],
)
def test_a_request_inside_the_schema_is_answered(
    client: TestClient, path: str, request_args: dict
) -> None:
    response = client.post(path, **request_args)
    assert response.status_code == 200, response.text


def test_a_digit_label_sent_as_a_number_is_in_the_schema_and_stored(client: TestClient) -> None:
    prediction = client.post("/predict", files=PICTURE).json()
    response = client.post(
        "/feedback", json={"prediction_id": prediction["prediction_id"], "label": 7}
    )
    assert response.status_code == 201, response.text
    assert response.json()["label"] == "7"
    label = client.get("/openapi.json").json()["components"]["schemas"]["FeedbackRequest"]
    kinds = label["properties"]["label"]["anyOf"]
    assert {"type": "integer", "minimum": 0, "maximum": 9} in kinds


def test_every_request_body_schema_refuses_unknown_fields(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    bodies = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                name = media["schema"]["$ref"].rsplit("/", 1)[-1]
                bodies[f"{method.upper()} {path}"] = schemas[name]
    assert set(bodies) == {"POST /predict", "POST /predict/batch", "POST /predict/pixels",
                           "POST /feedback"}  # fmt: skip
    assert all(body.get("additionalProperties") is False for body in bodies.values()), bodies
    assert bodies["POST /predict/batch"]["properties"]["files"]["minItems"] == 1
