"""`POST /feedback`: a user says whether an answer was right. Stored as *pending*: nothing a
stranger sends reaches training before someone reviews it (`python -m monitoring.review`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request

from monitoring.records import (
    AlreadyAnswered,
    StoredFeedback,
    UnknownPrediction,
    prediction_time,
    utc_now,
)
from serving.api import Service, ServiceDep
from serving.schemas import ErrorResponse, FeedbackReceipt, FeedbackRequest

if TYPE_CHECKING:
    from monitoring.store import Store

# A prediction is written by the writer of the worker that answered it, which may not be the
# worker its feedback reaches, within that writer's flush interval (`MNIST_LOG_FLUSH_SECONDS`);
# this much longer is allowed for a writer that is busy or slow.
WRITE_SLACK_SECONDS = 5.0
FIRST_RETRY_SECONDS = 0.02
LONGEST_RETRY_SECONDS = 0.25

FEEDBACK_ERRORS = {
    400: {"model": ErrorResponse, "description": "a body that cannot be parsed as JSON"},
    404: {"model": ErrorResponse, "description": "no logged prediction has this id"},
    409: {"model": ErrorResponse, "description": "this prediction has feedback already"},
    422: {"model": ErrorResponse, "description": "a malformed id or a label not 0-9/not_a_digit"},
    429: {"model": ErrorResponse, "description": "this client sent too much feedback lately"},
    503: {"model": ErrorResponse, "description": "the prediction store is off or unreachable"},
}

router = APIRouter()


def client_key(request: Request, secret: bytes) -> str:
    """A client's budget key: the HMAC of its address with the deployment's secret, so that no
    address is stored and none can be found again by hashing every address. The address is the
    socket peer's, or, from a trusted proxy (`MNIST_TRUSTED_PROXIES`), the client it names."""
    address = request.client.host if request.client else "unknown"
    return hmac.new(secret, address.encode(), hashlib.sha256).hexdigest()


def written_by(prediction_id: str, service: Service) -> datetime | None:
    """When the prediction `prediction_id` names must be in the store if it was logged at all:
    its id's time (or, if later, when the writers opened the store: this worker's stands for
    all, which start together) plus a writer's flush interval and slack: past already for an
    old or pruned id. None for what names no time, or one to come (made up)."""
    made = prediction_time(prediction_id)
    window = timedelta(seconds=service.settings.log_flush_seconds + WRITE_SLACK_SECONDS)
    if made is None or made > utc_now() + window:  # from the future: made up
        return None
    return max(made, service.prediction_log.opened_at or made) + window


def _check_budget(store: Store, client: str, service: Service) -> None:
    budget = service.settings.feedback_per_hour
    if store.feedback_count_since(client, utc_now() - timedelta(hours=1)) >= budget:
        raise HTTPException(
            429,
            f"Too much feedback from your address: at most {budget} answers an hour. "
            "Thank you; please try again later.",
            headers={"Retry-After": "3600"},
        )


async def _store_feedback(
    store: Store, body: FeedbackRequest, client: str, service: Service
) -> StoredFeedback:
    """Store the feedback once its prediction is in the store. A prediction answered a moment
    ago may still wait in a writer's queue, this worker's or another's: it is looked for again,
    on the event loop's time and no thread's, until its writer must have written it."""
    await asyncio.to_thread(_check_budget, store, client, service)
    deadline, delay = written_by(body.prediction_id, service), FIRST_RETRY_SECONDS
    while True:
        try:
            return await asyncio.to_thread(
                store.add_feedback, body.prediction_id, body.label, client
            )
        except UnknownPrediction:
            left = (deadline - utc_now()).total_seconds() if deadline else 0.0
            if left <= 0:
                raise
        service.prediction_log.flush_soon()  # in case it waits in this worker's queue
        await asyncio.sleep(min(delay, left))
        delay = min(2 * delay, LONGEST_RETRY_SECONDS)


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
    from sqlalchemy.exc import SQLAlchemyError  # imported by the store just opened: no cost

    try:
        secret = await asyncio.to_thread(lambda: store.client_key_secret)
        stored = await _store_feedback(store, body, client_key(request, secret), service)
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
