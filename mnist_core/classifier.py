"""The exported digit classifier, run by ONNX Runtime: one wrapper for evaluation and serving.

The ONNX graph is self-contained: it takes grey levels as they come out of `to_mnist` (0-255,
white digit on black) and does the normalisation itself, so any ONNX consumer — `mlflow models
serve`, this API, another language — needs nothing of this project to use it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mnist_core.imaging import IMAGE_SIZE

# The graph's input and outputs, by name (fixed at export).
PIXELS = "pixels"  # float32 (N, 1, 28, 28), grey levels 0-255
LOGITS = "logits"  # float32 (N, 10)
PROBABILITIES = "probabilities"  # float32 (N, 10), softmax of the logits


# The `uncertain` threshold of models exported before it travelled with the model.
DEFAULT_UNCERTAIN_BELOW = 0.7


@dataclass(frozen=True)
class ModelMetadata:
    """What the training run chose on validation data and wrote into the ONNX file's
    properties, so that it travels with the model wherever the file goes."""

    temperature: float = 1.0  # the logits in the graph are already divided by it
    uncertain_below: float = DEFAULT_UNCERTAIN_BELOW  # top-class probability flagged uncertain

    def as_properties(self) -> dict[str, str]:
        return {field.name: repr(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_properties(cls, properties: dict[str, str]) -> ModelMetadata:
        """Read back `as_properties`; absent or unreadable entries keep their defaults."""
        values = {}
        for field in dataclasses.fields(cls):
            try:
                values[field.name] = float(properties[field.name])
            except (KeyError, ValueError):
                continue
        return cls(**values)


@dataclass(frozen=True)
class Scores:
    logits: np.ndarray
    probabilities: np.ndarray


def _batch(pixels: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) → the graph's float32 (N, 1, 28, 28) input."""
    return np.asarray(pixels, dtype=np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)


def default_threads(workers: int = 1) -> int:
    """Intra-op threads that keep `workers` processes from oversubscribing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class DigitClassifier:
    """One ONNX Runtime session, shared by all threads of a process (`run` is thread-safe)."""

    def __init__(self, model: Path | bytes, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning idle threads would steal the cores that decode and preprocess requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.metadata = ModelMetadata.from_properties(
            self.session.get_modelmeta().custom_metadata_map
        )

    def scores(self, pixels: np.ndarray) -> Scores:
        """Logits and probabilities for uint8 MNIST-style images (N, 28, 28) in one call."""
        logits, probabilities = self.session.run([LOGITS, PROBABILITIES], {PIXELS: _batch(pixels)})
        return Scores(logits, probabilities)

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for uint8 MNIST-style images (N, 28, 28)."""
        return self.session.run([PROBABILITIES], {PIXELS: _batch(pixels)})[0]
