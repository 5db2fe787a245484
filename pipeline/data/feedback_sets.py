"""The accepted user feedback of the API's store, as a versioned dataset of two sides.

Each distinct 28×28 input lands by its sha256 on one side for good: `train.npz` (the train stage
adds it) or `held_out.npz` (the evaluate stage scores it, the gate compares it). A file is
rewritten only when its content changes, so an unchanged store leaves `dvc.lock` and everything
downstream as they were (the stage's outputs are `persist`ent, `always_changed`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from sqlalchemy.engine import make_url

from mnist_core.labels import NOT_A_DIGIT_CODE
from monitoring.records import FeedbackSet
from monitoring.store import open_store
from pipeline.data.datasets import FeedbackSplit
from pipeline.io import atomic_file
from pipeline.params import FeedbackParams

log = logging.getLogger(__name__)

SIDES = ("train", "held_out")


def held_out_side(input_hash: str, share: float) -> bool:
    """Whether an input belongs to the held-out side: its hash's first 32 bits, read as a
    fraction of 2³², fall below `share` (the same input, the same side, on every run)."""
    return int(input_hash[:8], 16) < share * 2**32


def split(feedback: FeedbackSet, share: float) -> dict[str, FeedbackSplit]:
    """The training and held-out sides of the accepted feedback, each in hash order (so the
    files depend on the feedback, not on when it was reviewed)."""
    order = np.argsort(feedback.input_hash, kind="stable")
    hashes = feedback.input_hash[order]
    held = np.array([held_out_side(h, share) for h in hashes], dtype=bool)
    return {
        side: FeedbackSplit(
            feedback.pixels[order][mask], feedback.labels[order][mask], hashes[mask]
        )
        for side, mask in (("train", ~held), ("held_out", held))
    }


def read_accepted(store_url: str) -> FeedbackSet | None:
    """The accepted feedback of the store, or None when there is no store (a SQLite file that
    does not exist is not created here)."""
    url = make_url(store_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None
    store = open_store(store_url)
    try:
        return store.accepted_feedback()
    finally:
        store.close()


def counts(sides: dict[str, FeedbackSplit]) -> dict[str, int]:
    return {
        f"{side}_{kind}": int(np.sum((data.labels == NOT_A_DIGIT_CODE) == (kind == "non_digits")))
        for side, data in sides.items()
        for kind in ("digits", "non_digits")
    }


def write_if_changed(path: Path, data: FeedbackSplit) -> bool:
    """Write `data` unless `path` already holds the same; returns whether it wrote."""
    if path.is_file() and FeedbackSplit.load(path).same_as(data):
        return False
    data.save(path)
    return True


def write_text_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return True


def export(params: FeedbackParams, store_url: str) -> dict[str, int]:
    """Write both sides and the counts (a DVC metrics file); returns the counts."""
    accepted = read_accepted(store_url)
    if accepted is None:
        log.info("No store at %s: the feedback sets are empty", store_url)
        sides = {side: FeedbackSplit.empty() for side in SIDES}
    else:
        sides = split(accepted, params.held_out_share)
    figures = counts(sides)
    changed = [
        side for side in SIDES if write_if_changed(params.out_dir / f"{side}.npz", sides[side])
    ]
    text = json.dumps(figures, indent=2, sort_keys=True) + "\n"
    write_text_if_changed(params.metrics, text)
    log.info("Accepted feedback: %s; %s", figures, f"rewrote {changed}" if changed else "unchanged")
    return figures
