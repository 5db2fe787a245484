"""Figures for the evaluate stage, built on `matplotlib.figure.Figure` (no global pyplot state)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay


def training_curves(history: Sequence[dict[str, float]]) -> Figure:
    """Training and validation cross-entropy by epoch, with the validation error rate beside."""
    epochs = [int(row["epoch"]) for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, accuracy = figure.subplots(1, 2)
    # Both curves are plain cross-entropy; the training one is measured on augmented batches
    # with dropout on, so it can sit above validation. (The smoothed objective is logged too.)
    train_label = "training (augmented, dropout on)"
    losses.plot(epochs, [row["train_loss"] for row in history], "o-", label=train_label)
    losses.plot(epochs, [row["val_loss"] for row in history], "o-", label="validation")
    # Error rate on a log scale: the last epochs' tenths of a percent stay visible.
    accuracy.plot(
        epochs, [100 * (1 - row["val_accuracy"]) for row in history], "o-", label="weights"
    )
    if any(math.isfinite(row.get("ema_val_loss", math.nan)) for row in history):
        ema_loss = [row["ema_val_loss"] for row in history]
        losses.plot(epochs, ema_loss, "o--", label="validation, moving average")
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


def reliability_diagram(bins: dict[str, Sequence], ece: dict[str, float]) -> Figure:
    """Accuracy against confidence per bin (a calibrated model lies on the diagonal), and how
    many predictions each bin holds, for each model in `bins`."""
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    curve, counts = figure.subplots(1, 2)
    curve.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for name, rows in bins.items():
        filled = [row for row in rows if row.count]
        curve.plot(
            [row.confidence for row in filled],
            [row.accuracy for row in filled],
            "o-",
            label=f"{name} (ECE {ece[name]:.4f})",
        )
        counts.plot([row.upper for row in filled], [row.count for row in filled], "o-", label=name)
    curve.set(xlabel="confidence", ylabel="accuracy", title="Reliability on the test set")
    counts.set(xlabel="confidence (bin's upper edge)", ylabel="predictions", yscale="log")
    counts.set_title("Predictions per confidence bin")
    for axes in (curve, counts):
        axes.grid(alpha=0.3)
        axes.legend()
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
