"""The HTTP endpoints: health, readiness, model info, predictions.

A prediction request reads top to bottom: read the upload → decode and preprocess it off the
event loop (`decode_pool.py`) → hand the 28×28 image to the micro-batcher → ONNX Runtime → respond.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numpy as np
from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image

from monitoring.records import PredictionRecord
from monitoring.writer import PredictionLog
from serving.batching import MicroBatcher
from serving.decode import UploadError
from serving.decode_pool import DecodePool
from serving.limits import human_size
from serving.metrics import ServiceMetrics
from serving.model_store import ModelStore, ServedModel
from serving.schemas import (
    BatchItem,
    BatchPrediction,
    ErrorResponse,
    Health,
    ModelInfo,
    ModelViewFlag,
    PicturesUpload,
    PictureUpload,
    PixelsRequest,
    Prediction,
    Readiness,
)
from serving.settings import ServingSettings
from serving.shadow import ShadowJob, ShadowScorer

if TYPE_CHECKING:  # SQLAlchemy's tables: loaded with the store, after the socket listens
    from monitoring.tables import Source

ERRORS = {
    400: {"model": ErrorResponse, "description": "a body that cannot be parsed (bad multipart)"},
    413: {"model": ErrorResponse, "description": "file too large"},
    415: {
        "model": ErrorResponse,
        "description": "not an image of an accepted type, or a body that is not multipart",
    },
    422: {
        "model": ErrorResponse,
        "description": "no file, a corrupt image or no digit in it; a field or value the schema "
        "does not name",
    },
    503: {
        "model": ErrorResponse,
        "description": "no model loaded yet, or the server is too busy (see `Retry-After`)",
    },
}

router = APIRouter()


@dataclass(frozen=True)
class Service:
    """What the endpoints work with, made once per app (one dependency is cheaper than five)."""

    settings: ServingSettings
    store: ModelStore
    metrics: ServiceMetrics
    batcher: MicroBatcher
    decode_pool: DecodePool
    prediction_log: PredictionLog
    shadow: ShadowScorer


# Dependencies are `async def` so FastAPI calls them on the event loop: a plain `def` one is sent
# to the thread pool, a hop that cost more per request than decoding a small PNG. Each endpoint
# has one: FastAPI solves every dependency on its own (about 20 µs of a request each), and
# `Call` hands over all a prediction needs in one.
async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


@dataclass(frozen=True)
class Call:
    """What one request that uses the model works with: the service, and the model version that
    answers this whole request (a reload swaps it only for later requests)."""

    service: Service
    model: ServedModel


async def get_call(request: Request) -> Call:
    service: Service = request.app.state.service
    served = service.store.current
    if served is None:
        raise HTTPException(503, f"No model is loaded: {service.store.problem}.")
    return Call(service, served)


async def get_upload_call(request: Request) -> Call:
    """`get_call` for the upload endpoints, which take the multipart/form-data their schema
    names and nothing else (Starlette would read a url-encoded form too, whose fields can never
    be files): another body is refused with 415 first. A request with no body at all is left to
    say "No file was uploaded"."""
    content_type = request.headers.get("content-type")
    if content_type and not content_type.lower().startswith("multipart/form-data"):
        raise UploadError(
            415,
            f"The body is {content_type.split(';')[0]}: send the pictures as multipart/form-data "
            "(curl -F file=@digit.png).",
        )
    return await get_call(request)


CallDep = Annotated[Call, Depends(get_call)]
UploadCallDep = Annotated[Call, Depends(get_upload_call)]

# What the two upload endpoints share: their answers and their tag.
UPLOAD_ROUTE = {"responses": ERRORS, "tags": ["predict"]}


async def read_upload(upload: UploadFile, settings: ServingSettings) -> bytes:
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise UploadError(
            413, f"The file is larger than the {human_size(settings.max_upload_bytes)} limit."
        )
    return data


def uncertain_below(served: ServedModel, service: Service) -> float:
    """The `uncertain` threshold: the environment's if set, else the one the model carries."""
    return served.uncertain_below(service.settings.uncertain_below)


# An uncertain answer whose two likeliest digits hold this much probability between them is a
# digit that could be read two ways; below it, the probability is spread over many digits, which
# is what the model was trained to do with non-digits.
TWO_WAY_SHARE = 0.9


def uncertain_reason(probabilities: np.ndarray) -> str:
    """Why an uncertain answer is uncertain, in words."""
    second, first = np.argsort(probabilities)[-2:]
    if probabilities[first] + probabilities[second] >= TWO_WAY_SHARE:
        return f"It could be a {first} or a {second}."
    return "It does not look like a digit."


def model_view_png(pixels: np.ndarray) -> str:
    """The 28×28 grey levels the model saw as a PNG data URL (about 300 bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def respond(
    probabilities: np.ndarray, served: ServedModel, service: Service, view: np.ndarray | None = None
) -> Prediction:
    """The answer for one image's row of class probabilities (with the picture the model saw,
    `view`, when it was asked for)."""
    digit = int(probabilities.argmax())
    confidence = float(probabilities[digit])
    uncertain = confidence < uncertain_below(served, service)
    prediction = Prediction(
        digit=digit,
        confidence=confidence,
        probabilities=[round(float(p), 6) for p in probabilities],
        uncertain=uncertain,
        reason=uncertain_reason(probabilities) if uncertain else None,
        model_version=served.version,
        model_view=None if view is None else model_view_png(view),
    )
    service.metrics.predictions.labels(str(digit), str(prediction.uncertain).lower()).inc()
    return prediction


def logged(
    prediction: Prediction, pixels: np.ndarray, source: Source, service: Service
) -> Prediction:
    """Count the answer per model version, queue it for the prediction log (its id and the
    preprocessed 28×28 grey levels only, never the upload) and for the challenger: the writer
    and the shadow run off this path."""
    service.metrics.monitoring.observe(
        prediction.model_version, prediction.digit, prediction.confidence, prediction.uncertain,
        source,
    )  # fmt: skip
    queued = service.prediction_log.submit(
        PredictionRecord(
            id=prediction.prediction_id,
            model_version=prediction.model_version,
            source=source,
            pixels=pixels,
            digit=prediction.digit,
            probabilities=prediction.probabilities,
            uncertain=prediction.uncertain,
        )
    )
    service.shadow.submit(
        ShadowJob(prediction.prediction_id, pixels, prediction.model_version, prediction.digit,
                  prediction.uncertain, logged=queued)
    )  # fmt: skip
    return prediction


@router.get("/health", response_model=Health, tags=["service"])
async def health() -> Health:
    """The process is alive (it may still be loading a model)."""
    return Health()


@router.get(
    "/ready", response_model=Readiness, responses={503: {"model": Readiness}}, tags=["service"]
)
async def ready(service: ServiceDep) -> Readiness | JSONResponse:
    """200 once a model is loaded (with a `reason` when it is not the aliased version), 503 with
    the reason until then."""
    store, batcher_problem = service.store, service.batcher.problem
    if store.current is None or batcher_problem is not None:
        body = Readiness(ready=False, reason=batcher_problem or store.problem)
        return JSONResponse(body.model_dump(), status_code=503)
    return Readiness(ready=True, model_version=store.current.version, reason=store.problem)


@router.get("/model", response_model=ModelInfo, responses={503: ERRORS[503]}, tags=["service"])
async def model_info(call: CallDep) -> ModelInfo:
    """Which registered model, version and training run are being served, and whether that is
    still the version the alias points to."""
    service, served = call.service, call.model
    return ModelInfo(
        name=served.name,
        alias=served.alias,
        version=served.version,
        run_id=served.run_id,
        source=served.source,
        loaded_at=served.loaded_at,
        temperature=served.classifier.metadata.temperature,
        uncertain_below=uncertain_below(served, service),
        alias_version=service.store.alias_version,
        problem=service.store.problem,
    )


@router.post("/predict", response_model=Prediction, **UPLOAD_ROUTE)
async def predict(
    form: Annotated[PictureUpload, Form()],
    call: UploadCallDep,
    response: Response,
    model_view: ModelViewFlag = False,
) -> Prediction:
    """Classify one uploaded picture of a digit."""
    service, served = call.service, call.model
    with service.batcher.arriving():
        pixels = await service.decode_pool.upload(await read_upload(form.file, service.settings))
    probabilities = await service.batcher.infer(served.classifier, pixels[np.newaxis])
    view = pixels if model_view else None
    prediction = logged(
        respond(probabilities[0], served, service, view), pixels, form.source, service
    )
    response.headers["X-Prediction-Id"] = prediction.prediction_id
    return prediction


@router.post("/predict/batch", response_model=BatchPrediction, **UPLOAD_ROUTE)
async def predict_batch(
    form: Annotated[PicturesUpload, Form()], call: UploadCallDep
) -> BatchPrediction:
    """Classify several pictures in one model call; a bad one gets its own error and does not
    spoil the others."""
    service, served = call.service, call.model
    files = form.files
    limit = service.settings.max_batch_files
    if len(files) > limit:
        raise UploadError(413, f"Send at most {limit} files at a time.")
    with service.batcher.arriving():
        uploads: list[bytes | UploadError] = []
        for upload in files:
            try:
                uploads.append(await read_upload(upload, service.settings))
            except UploadError as error:
                uploads.append(error)
        outcomes = await service.decode_pool.uploads(uploads)
    good = [pixels for pixels in outcomes if isinstance(pixels, np.ndarray)]
    rows = iter(await service.batcher.infer(served.classifier, np.stack(good)) if good else [])
    images = iter(good)
    results = [
        BatchItem(filename=upload.filename, status_code=outcome.status_code, error=outcome.detail)
        if isinstance(outcome, UploadError)
        else BatchItem(
            filename=upload.filename,
            status_code=200,
            prediction=logged(respond(next(rows), served, service), next(images), "batch", service),
        )
        for upload, outcome in zip(files, outcomes, strict=True)
    ]
    return BatchPrediction(model_version=served.version, results=results)


# JSON of grey levels: nothing there for 415 to refuse (a body that is not JSON gets 422).
PIXELS_ERRORS = {status: answer for status, answer in ERRORS.items() if status != 415}


@router.post(
    "/predict/pixels", response_model=Prediction, responses=PIXELS_ERRORS, tags=["predict"]
)
async def predict_pixels(
    body: PixelsRequest,
    call: CallDep,
    response: Response,
    model_view: ModelViewFlag = False,
) -> Prediction:
    """Classify a picture sent as rows of grey levels (0-255)."""
    service, served = call.service, call.model
    with service.batcher.arriving():
        pixels = await service.decode_pool.grey_levels(body.pixels)
    probabilities = await service.batcher.infer(served.classifier, pixels[np.newaxis])
    view = pixels if model_view else None
    prediction = logged(respond(probabilities[0], served, service, view), pixels, "pixels", service)
    response.headers["X-Prediction-Id"] = prediction.prediction_id
    return prediction
