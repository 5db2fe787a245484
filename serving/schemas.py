"""Request and response models: every endpoint's shape, as shown in /docs.

A request model says exactly what its endpoint accepts, and the endpoint accepts nothing else:
an unknown field, a number written as a string or a flag written `1` is refused with 422, so the
OpenAPI schema that clients (and schemathesis) read is the whole contract."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, UploadFile
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from mnist_core.labels import LABELS, NUM_CLASSES
from monitoring.records import new_prediction_id


class Prediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="the most probable digit")
    confidence: float = Field(ge=0, le=1, description="probability of `digit`")
    probabilities: list[float] = Field(
        min_length=NUM_CLASSES, max_length=NUM_CLASSES, description="probability of each digit 0-9"
    )
    uncertain: bool = Field(description="true when the model is not confident: maybe not a digit")
    reason: str | None = Field(
        default=None,
        description='why the answer is `uncertain`, in words ("It does not look like a digit." '
        'or "It could be a 4 or a 9."); null when it is not',
    )
    model_version: str = Field(description="registry version that made this prediction")
    model_view: str | None = Field(
        default=None,
        description="with `?model_view=true`: the 28×28 grey levels the model saw (white digit "
        "on black, after cropping and centring), as a PNG data URL; null otherwise",
    )
    prediction_id: str = Field(
        default_factory=new_prediction_id,
        description="this answer's id (a UUIDv7, time-ordered, 32 hex digits): send it to "
        "POST /feedback to say whether it was right",
    )


class BatchItem(BaseModel):
    filename: str | None = Field(default=None, description="the client's name for the file, echoed")
    prediction: Prediction | None = None
    error: str | None = Field(default=None, description="why this file could not be classified")
    status_code: int = Field(description="the status this file alone would have had")


class BatchPrediction(BaseModel):
    model_version: str
    results: list[BatchItem]


class RequestModel(BaseModel):
    """A JSON request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class FormModel(BaseModel):
    """A multipart form's fields: unknown fields are refused (the values are text by nature)."""

    model_config = ConfigDict(extra="forbid")


class PictureUpload(FormModel):
    file: UploadFile = Field(description="a picture of one digit: PNG, JPEG, BMP, GIF or WebP")
    source: Literal["upload", "canvas"] = Field(
        default="upload",
        description="where the picture comes from (the page sends `canvas`), for the log",
    )


class PicturesUpload(FormModel):
    files: list[UploadFile] = Field(
        min_length=1, description="several pictures, each under the field `files`"
    )


def _true_or_false(value: object) -> object:
    # A query string is text: the schema's boolean is written `true` or `false`, nothing else
    # (FastAPI alone would also take `1`, `yes`, `on`, `t`, and their opposites).
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, bool):  # the default
        return value
    raise PydanticCustomError("bool_parsing", "write true or false")


ModelViewFlag = Annotated[
    bool,
    BeforeValidator(_true_or_false),
    Query(description="also answer with the 28×28 picture the model saw, as a PNG (`model_view`)"),
]


def _numbers_only(rows: object) -> object:
    # Pydantic would take "12" and `true` for grey levels; JSON Schema's integers are numbers
    # without a fraction, so 12 and 12.0 are, and text and booleans are not. (One set of types
    # per row, made in C: 2 ms for 512×512 values.)
    if isinstance(rows, list):
        kinds: set[type] = set()
        for row in rows:
            if isinstance(row, list):
                kinds.update(map(type, row))
        if str in kinds or bool in kinds:
            raise PydanticCustomError("int_type", "grey levels are numbers, not text or booleans")
    return rows


GreyLevel = Annotated[int, Field(ge=0, le=255)]
MAX_PIXEL_SIDE = 512
# The schema's example: a vertical stroke, as a 1 drawn light on dark (a blank one is refused).
EXAMPLE_PIXELS = [
    [255 if 12 <= x <= 15 and 4 <= y <= 23 else 0 for x in range(28)] for y in range(28)
]


class PixelsRequest(RequestModel):
    pixels: Annotated[
        list[Annotated[list[GreyLevel], Field(min_length=1, max_length=MAX_PIXEL_SIDE)]],
        BeforeValidator(_numbers_only),
    ] = Field(
        description="grey levels 0-255, one list per row, rows of equal length (any size up "
        "to 512×512; a 28×28 MNIST-style image works as is). Dark-on-light and light-on-dark "
        "are both accepted.",
        min_length=1,
        max_length=MAX_PIXEL_SIDE,
        examples=[EXAMPLE_PIXELS],
    )


class ModelInfo(BaseModel):
    name: str = Field(description="the registered model's name, or the local model file's")
    alias: str | None = Field(description="the alias served (null: a local file, MNIST_MODEL_PATH)")
    version: str = Field(
        description="the registry version, or `sha256:…` of a local file's ONNX model"
    )
    run_id: str | None = Field(description="the training run (null when a local file names none)")
    source: str = Field(description="where it was loaded from: `models:/…` or a local path")
    loaded_at: float = Field(description="Unix time the version was loaded")
    temperature: float = Field(
        description="the calibration temperature fitted on validation data (1: none)"
    )
    uncertain_below: float = Field(
        description="top-class probability below which a prediction is flagged `uncertain`"
    )
    alias_version: str | None = Field(
        description="the version the alias pointed to at the last check (null: no such alias)"
    )
    problem: str | None = Field(
        default=None, description="why the served version is not the aliased one, if it is not"
    )


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    ready: bool
    model_version: str | None = None
    reason: str | None = Field(
        default=None, description="why not ready, or why the served version is not the aliased one"
    )


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong and what to do, in a sentence")


FeedbackLabel = Literal[LABELS]  # "0".."9" or "not_a_digit" (mnist_core.labels)


def _digit_as_text(value: object) -> object:
    # `"label": 7` means what `"label": "7"` does, and so does 7.0 (a JSON Schema integer is a
    # number without a fraction); a bool is no digit.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


DigitNumber = Annotated[int, Field(ge=0, le=9)]


class FeedbackRequest(RequestModel):
    prediction_id: str = Field(
        pattern="^[0-9a-f]{32}$", description="the `prediction_id` of the answer this is about"
    )
    label: Annotated[
        FeedbackLabel,
        BeforeValidator(_digit_as_text, json_schema_input_type=FeedbackLabel | DigitNumber),
    ] = Field(
        description="what the picture really shows: a digit 0-9 (the predicted one if the "
        "answer was right; as text or as a number) or `not_a_digit`"
    )


class FeedbackReceipt(BaseModel):
    prediction_id: str
    label: FeedbackLabel
    status: str = Field(description="`pending`: it is reviewed before any training uses it")
    predicted: int = Field(description="the digit the model answered")
    model_version: str = Field(description="the version that answered")
