"""The test set through the API's own input paths, beside `test_accuracy`.

`test_accuracy` scores the stored 28×28 arrays as the network saw them in training. The API
re-crops and re-centres whatever it is sent: `/predict/pixels` takes the grey levels
(`mnist_core.imaging.grey_levels_to_mnist`, the very function the endpoint calls) and `/predict`
an uploaded picture (here the same image as a PNG, decoded by Pillow, then `to_mnist`). These
figures measure what that preprocessing costs on MNIST's own digits.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import numpy as np
from PIL import Image

from mnist_core.classifier import DigitClassifier
from mnist_core.imaging import IMAGE_SIZE, EmptyImageError, grey_levels_to_mnist, to_mnist

log = logging.getLogger(__name__)

# Not a label: the API would answer 422 (the preprocessing found no digit), so no digit at all.
REFUSED_EMPTY = -2


def as_uploaded_png(image: np.ndarray) -> np.ndarray:
    """A 28×28 image sent as a PNG file and preprocessed as `/predict` does."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as upload:
        return to_mnist(upload)


def predictions_through(
    preprocess: Callable[[np.ndarray], np.ndarray],
    classifier: DigitClassifier,
    images: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """The digit the API would answer for each image, or `REFUSED_EMPTY`."""
    inputs = np.zeros((len(images), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    accepted = np.ones(len(images), bool)
    for index, image in enumerate(images):
        try:
            inputs[index] = preprocess(image)
        except EmptyImageError:
            accepted[index] = False
    predictions = np.concatenate(
        [
            classifier.predict_proba(inputs[start : start + batch_size]).argmax(axis=1)
            for start in range(0, len(inputs), batch_size)
        ]
    )
    return np.where(accepted, predictions, REFUSED_EMPTY)


def api_path_metrics(
    classifier: DigitClassifier, images: np.ndarray, labels: np.ndarray, batch_size: int
) -> dict[str, float | int]:
    """Accuracy and errors of the test set through `/predict/pixels` and as PNG uploads."""
    metrics: dict[str, float | int] = {}
    for path, preprocess in (("pixels", grey_levels_to_mnist), ("png", as_uploaded_png)):
        predictions = predictions_through(preprocess, classifier, images, batch_size)
        metrics[f"api_{path}_accuracy"] = float((predictions == labels).mean())
        metrics[f"api_{path}_errors"] = int((predictions != labels).sum())
        metrics[f"api_{path}_rejected"] = int((predictions == REFUSED_EMPTY).sum())
    log.info(
        "through the API's preprocessing: /predict/pixels %.4f (%d errors), PNG upload %.4f "
        "(%d errors)", metrics["api_pixels_accuracy"], metrics["api_pixels_errors"],
        metrics["api_png_accuracy"], metrics["api_png_errors"],
    )  # fmt: skip
    return metrics
