"""`POST /feedback`: a user says whether an answer was right. Stored as *pending*: nothing a
stranger sends reaches training before someone reviews it (`python -m monitoring.review`)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError

from monitoring.records import StoredFeedback, utc_now
from monitoring.store import AlreadyAnswered, Store, UnknownPrediction
from serving.api import Service, ServiceDep
from serving.schemas import ErrorResponse, FeedbackReceipt, FeedbackRequest

# How long a prediction may still be in the log's queue when its feedback arrives.
QUEUED_WRITE_SECONDS = 5.0

FEEDBACK_ERRORS = {
    400: {"model": ErrorResponse, "description": "a body that cannot be parsed as JSON"},
    404: {"model": ErrorResponse, "description": "no logged prediction has this id"},
    409: {"model": ErrorResponse, "description": "this prediction has feedback already"},
    422: {"model": ErrorResponse, "description": "a malformed id or a label not 0-9/not_a_digit"},
    429: {"model": ErrorResponse, "description": "this client sent too much feedback lately"},
    503: {"model": ErrorResponse, "description": "the prediction store is off or unreachable"},
}

router = APIRouter()


def client_key(request: Request) -> str:
    """A client's budget key: a hash of its address, so that no address is stored."""
    address = request.client.host if request.client else "unknown"
    return hashlib.sha256(f"mnist-feedback:{address}".encode()).hexdigest()


def _store_feedback(
    store: Store, body: FeedbackRequest, client: str, service: Service
) -> StoredFeedback:
    budget = service.settings.feedback_per_hour
    if store.feedback_count_since(client, utc_now() - timedelta(hours=1)) >= budget:
        raise HTTPException(
            429,
            f"Too much feedback from your address: at most {budget} answers an hour. "
            "Thank you; please try again later.",
            headers={"Retry-After": "3600"},
        )
    try:
        return store.add_feedback(body.prediction_id, body.label, client)
    except UnknownPrediction:
        pass
    # The prediction may still wait in the log's queue: let the writer catch up, then retry.
    service.prediction_log.wait_until_written(QUEUED_WRITE_SECONDS)
    return store.add_feedback(body.prediction_id, body.label, client)


@router.post(
    "/feedback",
    status_code=201,
    response_model=FeedbackReceipt,
    responses=FEEDBACK_ERRORS,
    tags=["feedback"],
)
async def give_feedback(
    body: FeedbackRequest, request: Request, service: ServiceDep
) -> FeedbackReceipt:
    """Say whether a prediction was right: `label` is the digit the picture really shows (the
    predicted one if the answer was right) or `not_a_digit`. One answer per prediction."""
    store = await asyncio.to_thread(service.prediction_log.store)
    if store is None:
        why = service.prediction_log.problem or "the prediction log is off (MNIST_PREDICTION_LOG)"
        raise HTTPException(503, f"Feedback cannot be stored now: {why}.")
    try:
        stored = await asyncio.to_thread(_store_feedback, store, body, client_key(request), service)
    except UnknownPrediction:
        raise HTTPException(
            404,
            f"No logged prediction has the id {body.prediction_id}: feedback can be given only "
            "on answers this service logged (and still keeps).",
        ) from None
    except AlreadyAnswered:
        raise HTTPException(
            409, f"Prediction {body.prediction_id} has feedback already: one answer each."
        ) from None
    except SQLAlchemyError as error:
        raise HTTPException(
            503, f"Feedback cannot be stored now: the prediction store failed ({error.code})."
        ) from None
    service.metrics.monitoring.feedback.labels(
        stored.model_version, str(stored.predicted), stored.label
    ).inc()
    return FeedbackReceipt(
        prediction_id=stored.prediction_id,
        label=stored.label,
        status="pending",
        predicted=stored.predicted,
        model_version=stored.model_version,
    )
