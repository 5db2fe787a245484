"""The review sheet: one self-contained HTML page of feedback, each item with the 28×28 input
the model saw (enlarged pixel for pixel), its answer and confidence, the user's label, the time
and the id to accept or reject. Written only where the reviewer asks (`mnist-feedback sheet`)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import numpy as np
from sqlalchemy import select

from monitoring.pictures import png_data_uri
from monitoring.records import FeedbackFilter, FeedbackRow
from monitoring.store import Store
from monitoring.tables import decode_pixels, decode_probabilities, predictions

SCALE = 5  # each input pixel is shown as SCALE × SCALE screen pixels
STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
.items { display: grid; grid-template-columns: repeat(auto-fill, minmax(15em, 1fr)); gap: 1em; }
figure { margin: 0; padding: .8em; border: 1px solid #ccc; border-radius: 6px; }
img { image-rendering: pixelated; image-rendering: crisp-edges; display: block; }
figcaption { margin-top: .5em; line-height: 1.5; }
.disagree { color: #b00; font-weight: 600; }
code { font-size: 11px; word-break: break-all; user-select: all; }
"""


@dataclass(frozen=True)
class ReviewItem:
    """One piece of feedback with the input and the answer it is about."""

    row: FeedbackRow
    pixels: np.ndarray  # (28, 28) uint8, as stored
    confidence: float  # the answer's probability, as served
    uncertain: bool


def review_items(store: Store, which: FeedbackFilter) -> list[ReviewItem]:
    """The feedback matching `which`, oldest first, with each answer's stored input."""
    rows = store.list_feedback(which)
    if not rows:
        return []
    query = select(
        predictions.c.id, predictions.c.pixels, predictions.c.probabilities, predictions.c.uncertain
    ).where(predictions.c.id.in_([row.prediction_id for row in rows]))
    with store.engine.connect() as connection:
        answers = {answer.id: answer for answer in connection.execute(query)}
    items = []
    for row in rows:
        answer = answers[row.prediction_id]
        confidence = float(decode_probabilities([answer.probabilities])[0][row.predicted])
        pixels = decode_pixels([answer.pixels])[0]
        items.append(ReviewItem(row, pixels, confidence, bool(answer.uncertain)))
    return items


def _figure(item: ReviewItem) -> str:
    row = item.row
    side = item.pixels.shape[0] * SCALE
    agrees = row.label == str(row.predicted)
    label = escape(row.label) if agrees else f'<span class="disagree">{escape(row.label)}</span>'
    flag = " · uncertain" if item.uncertain else ""
    # Calibrated answers are often 0.99996: not "1.0000", which would say the model was sure.
    confidence = f"{item.confidence:.4f}" if item.confidence < 0.99995 else "≥ 0.9999"
    return (
        f'<figure id="{escape(row.prediction_id)}">'
        f'<img src="{png_data_uri(item.pixels)}" width="{side}" height="{side}" '
        f'alt="the 28×28 input of {escape(row.prediction_id)}">'
        f"<figcaption>model: <b>{row.predicted}</b>, confidence {confidence}{flag}, "
        f"version {escape(row.model_version)}<br>user: <b>{label}</b> · {escape(row.status)}<br>"
        f"{row.created_at:%Y-%m-%d %H:%M:%S} UTC · {escape(row.source)}<br>"
        f"<code>{escape(row.prediction_id)}</code></figcaption></figure>"
    )


def render_sheet(items: list[ReviewItem], title: str) -> str:
    """The page: no scripts, no links, nothing fetched (the pictures are data URIs)."""
    body = "\n".join(_figure(item) for item in items) or "<p>No feedback matches.</p>"
    inputs = len({item.row.input_hash for item in items})
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{len(items)} feedback, {inputs} distinct inputs. Each "
        f"picture is the 28×28 input the model saw, {SCALE}× enlarged. Accept or reject by id: "
        "<code>mnist-feedback accept ID …</code>, <code>mnist-feedback reject ID …</code>.</p>"
        f'<div class="items">\n{body}\n</div></body></html>\n'
    )
