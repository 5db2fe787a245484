"""Figures for the evaluate stage, built on `matplotlib.figure.Figure` (no global pyplot state)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay


def training_curves(history: Sequence[dict[str, float]]) -> Figure:
    """Training and validation loss by epoch, with the validation error rate beside them."""
    epochs = [int(row["epoch"]) for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, accuracy = figure.subplots(1, 2)
    losses.plot(epochs, [row["epoch_loss"] for row in history], "o-", label="epoch_loss (train)")
    losses.plot(epochs, [row["val_loss"] for row in history], "o-", label="val_loss")
    # Error rate on a log scale: the last epochs' tenths of a percent stay visible.
    accuracy.plot(
        epochs, [100 * (1 - row["val_accuracy"]) for row in history], "o-", label="weights"
    )
    if any(math.isfinite(row.get("ema_val_loss", math.nan)) for row in history):
        losses.plot(epochs, [row["ema_val_loss"] for row in history], "o--", label="ema_val_loss")
        ema_error = [100 * (1 - row["ema_val_accuracy"]) for row in history]
        accuracy.plot(epochs, ema_error, "o--", label="moving average of weights")
    losses.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    accuracy.set(xlabel="epoch", ylabel="error (%)", title="Validation error", yscale="log")
    losses.legend()
    accuracy.legend()
    for axes in (losses, accuracy):
        axes.grid(alpha=0.3)
        axes.set_xticks(epochs)
    return figure


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> Figure:
    figure = Figure(figsize=(7, 6), layout="constrained")
    axes = figure.subplots()
    ConfusionMatrixDisplay.from_predictions(
        labels, predictions, ax=axes, cmap="Blues", colorbar=True, values_format="d"
    )
    axes.set_title("Test set confusion matrix")
    return figure


def misclassified_gallery(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    confidences: np.ndarray,
    limit: int = 40,
) -> Figure:
    """The test digits the model got wrong, most confident mistakes first."""
    wrong = np.flatnonzero(labels != predictions)
    wrong = wrong[np.argsort(-confidences[wrong])][:limit]
    columns = 10
    rows = max(1, -(-len(wrong) // columns))
    figure = Figure(figsize=(columns * 1.2, rows * 1.45 + 0.4), layout="constrained")
    total = int((labels != predictions).sum())
    figure.suptitle(f"Misclassified test digits ({total} in all): true → predicted (confidence)")
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, wrong, strict=False):
        axes.imshow(images[index], cmap="gray_r")
        axes.set_title(
            f"{labels[index]}→{predictions[index]} ({confidences[index]:.2f})", fontsize=8
        )
    return figure
