"""Training checkpoints: the whole training state after each epoch, so a killed run resumes.

A checkpoint belongs to one configuration: its fingerprint (the training parameters and the
data version) must match for a run to resume from it; any other is ignored and overwritten.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.io import atomic_file


def fingerprint(params: dict[str, Any], data_version: str) -> str:
    text = json.dumps({"params": params, "data": data_version}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    fingerprint: str
    # Kept with the state and handed back on resume (the train stage keeps its MLflow run here).
    extra: dict[str, str] = field(default_factory=dict)

    def save(self, state: dict[str, Any]) -> None:
        with atomic_file(self.path) as tmp:  # a kill mid-save leaves the previous epoch's
            torch.save({**state, "fingerprint": self.fingerprint, "extra": self.extra}, tmp)

    def load(self) -> dict[str, Any] | None:
        """The saved state if it belongs to this configuration, else None."""
        if not self.path.is_file():
            return None
        # Our own file, written by `save`: it holds optimizer and RNG state, not only tensors.
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        return state if state.get("fingerprint") == self.fingerprint else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
