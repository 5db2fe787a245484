"""Stage `evaluate`: score the exported ONNX model on the held-out test set and the Paint digits.

The model is run by `mnist_core.classifier`, the API's own inference code, so what is evaluated
is what is served. Everything goes to DVC metrics/plots files and to the MLflow run that trained
the model.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import mlflow
import numpy as np
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from mnist_core.classifier import DigitClassifier
from mnist_core.imaging import IMAGE_SIZE, NUM_CLASSES, to_mnist
from mnist_core.settings import MlflowSettings
from pipeline import figures
from pipeline.cli import parse_stage_args
from pipeline.data import load_split
from pipeline.io import atomic_file, read_json, write_json
from pipeline.params import EvaluateParams
from pipeline.tracking import configure_mlflow

log = logging.getLogger(__name__)

SEED_IMAGE_PATTERN = re.compile(r"num_(\d)\.png$")


def load_seed_images(directory: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Hand-drawn digits named `num_<label>.png`, through the same preprocessing as the API."""
    names, images, labels = [], [], []
    for path in sorted(directory.glob("num_*.png")):
        if match := SEED_IMAGE_PATTERN.search(path.name):
            with Image.open(path) as image:
                images.append(to_mnist(image))
            names.append(path.name)
            labels.append(int(match.group(1)))
    empty = np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return names, np.stack(images) if images else empty, np.array(labels)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of logits (N, 10) against integer labels, computed stably."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def per_class_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, dict[str, float]]:
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=range(NUM_CLASSES), zero_division=0
    )
    return {
        str(digit): {
            "precision": float(precision[digit]),
            "recall": float(recall[digit]),
            "f1": float(f1[digit]),
            "support": int(support[digit]),
        }
        for digit in range(NUM_CLASSES)
    }


def read_history(path: Path) -> list[dict[str, float]]:
    """The numeric columns of the training history written by the train stage."""
    with path.open() as stream:
        rows = list(csv.DictReader(stream))
    return [{key: float(value) for key, value in row.items() if key != "kept"} for row in rows]


def evaluate(params: EvaluateParams, settings: MlflowSettings) -> dict[str, object]:
    """Compute test and seed-image metrics, write figures and log it all to the training run."""
    classifier = DigitClassifier(params.onnx_path)
    images, labels = (split.numpy() for split in load_split(params.data_dir, "test"))
    scores = [
        classifier.scores(images[start : start + params.batch_size])
        for start in range(0, len(images), params.batch_size)
    ]
    logits = np.concatenate([score.logits for score in scores])
    probabilities = np.concatenate([score.probabilities for score in scores])
    labels_np, predictions_np = labels, probabilities.argmax(axis=1)
    confidences = probabilities.max(axis=1)

    seed_names, seed_images, seed_labels = load_seed_images(params.seed_images_dir)
    seed_predictions = (
        classifier.predict_proba(seed_images).argmax(axis=1) if len(seed_names) else seed_labels
    )
    metrics: dict[str, object] = {
        "test_accuracy": float((predictions_np == labels_np).mean()),
        "test_loss": cross_entropy(logits, labels_np),
        "test_errors": int((predictions_np != labels_np).sum()),
        "seed_accuracy": float((seed_predictions == seed_labels).mean())
        if len(seed_names)
        else 0.0,
        "seed_predictions": {n: int(p) for n, p in zip(seed_names, seed_predictions, strict=True)},
        "per_class": per_class_metrics(labels_np, predictions_np),
    }
    log.info(
        "test accuracy %.4f (%d errors), seed images %s",
        metrics["test_accuracy"],
        metrics["test_errors"],
        metrics["seed_predictions"],
    )

    params.figures_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(params.predictions) as tmp, tmp.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(labels_np.tolist(), predictions_np.tolist(), strict=True))
    figure_set = {
        "confusion_matrix.png": figures.confusion_matrix(labels_np, predictions_np),
        "training_curves.png": figures.training_curves(read_history(params.history)),
        "misclassified.png": figures.misclassified_gallery(
            images, labels_np, predictions_np, confidences
        ),
    }
    for name, figure in figure_set.items():
        with atomic_file(params.figures_dir / name) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
    write_json(params.metrics, metrics)

    run_id = read_json(params.run_info)["run_id"]
    configure_mlflow(settings)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        mlflow.log_metrics(
            {
                f"{kind}_{digit}": values[kind]
                for digit, values in metrics["per_class"].items()  # type: ignore[union-attr]
                for kind in ("precision", "recall")
            }
        )
        mlflow.log_dict(metrics, "evaluation/metrics.json")
        for name, figure in figure_set.items():
            mlflow.log_figure(figure, f"evaluation/{name}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    evaluate(parse_stage_args(__doc__ or "", argv).evaluate, MlflowSettings())


if __name__ == "__main__":
    main()
