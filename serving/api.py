"""The HTTP endpoints: health, readiness, model info, predictions."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image

from pipeline.imaging import EmptyImageError, to_mnist
from serving.decode import UploadError, decode_image
from serving.metrics import ServiceMetrics
from serving.model_store import ModelStore, ServedModel
from serving.schemas import (
    BatchItem,
    BatchPrediction,
    ErrorResponse,
    Health,
    ModelInfo,
    PixelsRequest,
    Prediction,
    Readiness,
)
from serving.settings import ServingSettings

ERRORS = {
    413: {"model": ErrorResponse, "description": "file too large"},
    415: {"model": ErrorResponse, "description": "not an image of an accepted type"},
    422: {"model": ErrorResponse, "description": "no file, corrupt image, or no digit in it"},
    503: {"model": ErrorResponse, "description": "no model loaded yet"},
}

router = APIRouter()


def get_store(request: Request) -> ModelStore:
    return request.app.state.store


def get_settings(request: Request) -> ServingSettings:
    return request.app.state.settings


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


StoreDep = Annotated[ModelStore, Depends(get_store)]
SettingsDep = Annotated[ServingSettings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def get_model(store: StoreDep) -> ServedModel:
    """The version to use for this whole request (a reload swaps it only for later requests)."""
    served = store.current
    if served is None:
        raise HTTPException(503, f"No model is loaded: {store.last_error}.")
    return served


ModelDep = Annotated[ServedModel, Depends(get_model)]


def read_upload(upload: UploadFile, settings: ServingSettings) -> bytes:
    data = upload.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise UploadError(
            413, f"The file is larger than the {settings.max_upload_bytes / 2**20:g} MB limit."
        )
    return data


def classify(
    image: Image.Image, served: ServedModel, settings: ServingSettings, metrics: ServiceMetrics
) -> Prediction:
    pixels = to_mnist(image)
    probabilities = served.predict(torch.from_numpy(pixels[np.newaxis]))[0]
    confidence, digit = probabilities.max(dim=0)
    prediction = Prediction(
        digit=int(digit),
        confidence=float(confidence),
        probabilities=[round(float(p), 6) for p in probabilities],
        uncertain=float(confidence) < settings.uncertain_below,
        model_version=served.version,
    )
    metrics.predictions.labels(str(prediction.digit), str(prediction.uncertain).lower()).inc()
    return prediction


@router.get("/health", response_model=Health, tags=["service"])
def health() -> Health:
    """The process is alive (it may still be loading a model)."""
    return Health()


@router.get(
    "/ready", response_model=Readiness, responses={503: {"model": Readiness}}, tags=["service"]
)
def ready(store: StoreDep) -> Readiness | JSONResponse:
    """200 once a model is loaded, 503 with the reason until then."""
    if store.current is None:
        body = Readiness(ready=False, reason=store.last_error)
        return JSONResponse(body.model_dump(), status_code=503)
    return Readiness(ready=True, model_version=store.current.version)


@router.get("/model", response_model=ModelInfo, responses={503: ERRORS[503]}, tags=["service"])
def model_info(served: ModelDep) -> ModelInfo:
    """Which registered model, version and training run are being served."""
    return ModelInfo(
        name=served.name,
        alias=served.alias,
        version=served.version,
        run_id=served.run_id,
        loaded_at=served.loaded_at,
    )


@router.post("/predict", response_model=Prediction, responses=ERRORS, tags=["predict"])
def predict(
    file: Annotated[
        UploadFile, File(description="a picture of one digit: PNG, JPEG, BMP, GIF or WebP")
    ],
    served: ModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> Prediction:
    """Classify one uploaded picture of a digit."""
    image = decode_image(read_upload(file, settings), settings.max_image_pixels)
    return classify(image, served, settings, metrics)


@router.post("/predict/batch", response_model=BatchPrediction, responses=ERRORS, tags=["predict"])
def predict_batch(
    files: Annotated[
        list[UploadFile], File(description="several pictures, each under the field `files`")
    ],
    served: ModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> BatchPrediction:
    """Classify several pictures; a bad one gets its own error and does not spoil the others."""
    if len(files) > settings.max_batch_files:
        raise UploadError(413, f"Send at most {settings.max_batch_files} files at a time.")
    results = []
    for upload in files:
        try:
            image = decode_image(read_upload(upload, settings), settings.max_image_pixels)
            prediction = classify(image, served, settings, metrics)
            results.append(
                BatchItem(filename=upload.filename, prediction=prediction, status_code=200)
            )
        except UploadError as error:
            results.append(
                BatchItem(
                    filename=upload.filename, error=error.detail, status_code=error.status_code
                )
            )
        except EmptyImageError as error:
            results.append(BatchItem(filename=upload.filename, error=str(error), status_code=422))
    return BatchPrediction(model_version=served.version, results=results)


@router.post("/predict/pixels", response_model=Prediction, responses=ERRORS, tags=["predict"])
def predict_pixels(
    body: PixelsRequest,
    served: ModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> Prediction:
    """Classify a picture sent as rows of grey levels (0-255)."""
    widths = {len(row) for row in body.pixels}
    if len(widths) != 1 or not 0 < widths.pop() <= 1024:
        raise UploadError(
            422, "`pixels` must be a rectangle: rows of equal length, 1 to 1024 each."
        )
    array = np.asarray(body.pixels)
    if array.min() < 0 or array.max() > 255:
        raise UploadError(422, "Pixel values must be grey levels from 0 to 255.")
    return classify(Image.fromarray(array.astype(np.uint8), mode="L"), served, settings, metrics)
