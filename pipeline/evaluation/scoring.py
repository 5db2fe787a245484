"""Score the exported ONNX model on the held-out test set, the Paint digits and two generated
sets that are not MNIST: real-looking digits (fonts, mouse drawings;
`pipeline.datagen.digit_pictures`), the handwriting kinds training never saw (thin and thick
pens, low-resolution scans, off-centre, slanted; reported per kind), and the test rendition of
every non-digit family (`pipeline.datagen.non_digit_families`), which should come out
`uncertain` — reported per family, the families training never saw apart.

The model is run by `mnist_core.classifier`, the API's own inference code, and its calibration
and `uncertain` threshold are the ones in the file, so what is evaluated is what is served. The
test set is scored here once; nothing is chosen on it. Everything goes to DVC metrics/plots files
and to the MLflow run that trained the model.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from mnist_core.classifier import DigitClassifier
from mnist_core.imaging import IMAGE_SIZE, to_mnist
from mnist_core.labels import NOT_A_DIGIT_CODE, NUM_CLASSES
from mnist_core.settings import MlflowSettings
from pipeline.data.datasets import (
    FeedbackSplit,
    NonDigitSet,
    data_version,
    load_split,
    split_path,
)
from pipeline.datagen import digit_pictures as pictures
from pipeline.evaluation import figures
from pipeline.evaluation.api_path import api_path_metrics
from pipeline.evaluation.rejection import rejection_metrics
from pipeline.io import atomic_file, read_json, sha256_of, write_json
from pipeline.params import EvaluateParams
from pipeline.registry.tracking import configure_mlflow, log_dataset, run_in_this_store
from pipeline.training import calibration

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


def share(flags: np.ndarray | list[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else 0.0


def by_kind(kinds: list[str], values: np.ndarray) -> dict[str, float]:
    return {kind: share(values[np.array(kinds) == kind]) for kind in dict.fromkeys(kinds)}


def _read(
    classifier: DigitClassifier, drawn: pictures.Preprocessed
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Whether each picture is read right and whether it is flagged, with its kind. A picture
    the preprocessing rejects as empty (the API's 422) is wrong, and flagged."""
    probabilities = classifier.predict_proba(drawn.images)
    correct = probabilities.argmax(axis=1) == drawn.labels
    flagged = probabilities.max(axis=1) < classifier.metadata.uncertain_below
    correct = np.concatenate([correct, np.zeros(len(drawn.rejected), bool)])
    flagged = np.concatenate([flagged, np.ones(len(drawn.rejected), bool)])
    return correct, flagged, drawn.kinds + drawn.rejected


def real_picture_metrics(classifier: DigitClassifier, seed: int) -> dict[str, object]:
    """Accuracy on the generated real-looking digits, and how many get flagged, with the
    threshold the model carries."""
    correct, flagged, kinds = _read(classifier, pictures.preprocess(pictures.real_pictures(seed)))
    return {
        "real_pictures_accuracy": share(correct),
        "real_pictures_flagged": share(flagged),
        "real_pictures_count": len(correct),
        "real_pictures_by_style": by_kind(kinds, correct),
    }


def handwriting_metrics(classifier: DigitClassifier, seed: int) -> dict[str, object]:
    """Accuracy on the handwriting kinds training never saw (thin and thick pens, low-resolution
    scans, far off-centre, strongly slanted: `pictures.HANDWRITING_KINDS`), per kind, and how
    many get flagged."""
    correct, flagged, kinds = _read(classifier, pictures.preprocess(pictures.handwriting(seed)))
    return {
        "handwriting_accuracy": share(correct),
        "handwriting_flagged": share(flagged),
        "handwriting_by_kind": by_kind(kinds, correct),
        "handwriting_flagged_by_kind": by_kind(kinds, flagged),
    }


def non_digit_metrics(
    classifier: DigitClassifier, non_digits: NonDigitSet, digit_confidence: np.ndarray
) -> dict[str, object]:
    """Non-digits flagged (as `uncertain`, or rejected as empty), AUROC and the share accepted
    at 95/99 % of digits accepted, per family and for the families training saw and never saw;
    `digit_confidence` is the top-class probability of the same split's digits."""
    confidence = classifier.predict_proba(non_digits.images).max(axis=1)
    figures = rejection_metrics(
        digit_confidence, non_digits, confidence, classifier.metadata.uncertain_below
    )
    return {
        "non_digits_flagged": figures["all"]["flagged"],
        "held_out_non_digits_flagged": figures["held_out"].get("flagged", 0.0),
        "non_digits": figures,
    }


def feedback_metrics(classifier: DigitClassifier, held_out: FeedbackSplit) -> dict[str, object]:
    """Accuracy on the held-out user feedback: a digit is right when predicted as labelled, a
    `not_a_digit` answer when the model flags the input `uncertain`; and how many rows."""
    if not len(held_out):
        return {"feedback_count": 0}
    probabilities = classifier.predict_proba(held_out.images)
    is_digit = held_out.labels != NOT_A_DIGIT_CODE
    right = np.where(
        is_digit,
        probabilities.argmax(axis=1) == held_out.labels,
        probabilities.max(axis=1) < classifier.metadata.uncertain_below,
    )
    return {
        "feedback_count": len(held_out),
        "feedback_accuracy": share(right),
        "feedback_digits_accuracy": share(right[is_digit]),
        "feedback_non_digits_flagged": share(right[~is_digit]),
    }


def model_identity(params: EvaluateParams) -> dict[str, str]:
    """Which model file and data the metrics are of: `register` refuses another file's."""
    return {
        "onnx_sha256": sha256_of(params.onnx_path),
        "data_version": data_version(params.data_dir),
    }


def evaluation_run(params: EvaluateParams, metrics: dict[str, object]) -> str:
    """The run to log to: the training run, or, when this tracking store does not know it (a
    `dvc pull` on another machine, a new server), a run the model is logged again in (a warning
    says so; `register` registers from that run)."""
    run = read_json(params.run_info)
    return run_in_this_store(MlflowClient(), run, params.onnx_path, metrics)[0]


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
    # The file's logits are calibrated; times the temperature they are the network's own.
    metadata = classifier.metadata
    uncalibrated = calibration.probabilities(logits * metadata.temperature)
    bins = {
        "uncalibrated": calibration.reliability(uncalibrated, labels_np),
        "calibrated": calibration.reliability(probabilities.astype(np.float64), labels_np),
    }

    seed_names, seed_images, seed_labels = load_seed_images(params.seed_images_dir)
    seed_predictions = (
        classifier.predict_proba(seed_images).argmax(axis=1) if len(seed_names) else seed_labels
    )
    metrics: dict[str, object] = {
        "test_accuracy": float((predictions_np == labels_np).mean()),
        "test_loss": calibration.cross_entropy(logits, labels_np),  # calibrated, as served
        "test_loss_uncalibrated": calibration.cross_entropy(
            logits * metadata.temperature, labels_np
        ),
        "test_errors": int((predictions_np != labels_np).sum()),
        "seed_accuracy": float((seed_predictions == seed_labels).mean())
        if len(seed_names)
        else 0.0,
        "seed_predictions": {n: int(p) for n, p in zip(seed_names, seed_predictions, strict=True)},
        "temperature": metadata.temperature,
        "uncertain_below": metadata.uncertain_below,
        "test_ece_uncalibrated": calibration.expected_calibration_error(uncalibrated, labels_np),
        "test_ece": calibration.expected_calibration_error(probabilities, labels_np),
        "test_flagged": share(confidences < metadata.uncertain_below),
        **real_picture_metrics(classifier, params.pictures_seed),
        **handwriting_metrics(classifier, params.pictures_seed),
        **non_digit_metrics(classifier, NonDigitSet.load(params.non_digits), confidences),
        **feedback_metrics(
            classifier,
            FeedbackSplit.load(params.feedback) if params.feedback else FeedbackSplit.empty(),
        ),
        "per_class": per_class_metrics(labels_np, predictions_np),
    }
    metrics |= api_path_metrics(classifier, images, labels_np, params.batch_size)
    log.info(
        "test accuracy %.4f (%d errors), ECE %.4f (uncalibrated %.4f), seed images %s; "
        "real pictures %.3f, handwriting %.3f %s; non-digits flagged %.3f (families never "
        "trained on %.3f), test digits flagged %.4f",
        metrics["test_accuracy"], metrics["test_errors"], metrics["test_ece"],
        metrics["test_ece_uncalibrated"], metrics["seed_predictions"],
        metrics["real_pictures_accuracy"], metrics["handwriting_accuracy"],
        metrics["handwriting_by_kind"], metrics["non_digits_flagged"],
        metrics["held_out_non_digits_flagged"], metrics["test_flagged"],
    )  # fmt: skip

    params.figures_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(params.predictions) as tmp, tmp.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(labels_np.tolist(), predictions_np.tolist(), strict=True))
    for model, rows in bins.items():  # one file per curve, for `dvc plots`
        path = params.figures_dir / f"reliability_{model}.csv"
        with atomic_file(path) as tmp, tmp.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["confidence", "accuracy", "count", "bin_upper_edge"])
            writer.writerows(
                [row.confidence, row.accuracy, row.count, round(row.upper, 4)]
                for row in rows
                if row.count
            )
    figure_set = {
        "confusion_matrix.png": figures.confusion_matrix(labels_np, predictions_np),
        "training_curves.png": figures.training_curves(read_history(params.history)),
        "reliability.png": figures.reliability_diagram(
            bins,
            {"uncalibrated": metrics["test_ece_uncalibrated"], "calibrated": metrics["test_ece"]},
        ),
        "misclassified.png": figures.misclassified_gallery(
            images, labels_np, predictions_np, confidences
        ),
    }
    for name, figure in figure_set.items():
        with atomic_file(params.figures_dir / name) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
    write_json(params.metrics, metrics | model_identity(params))

    configure_mlflow(settings)
    with mlflow.start_run(run_id=evaluation_run(params, metrics)):
        path = split_path(params.data_dir, "test")
        log_dataset(path, "test", images, labels_np, data_version(params.data_dir))
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        mlflow.log_metrics(
            {
                f"{kind}_{digit}": values[kind]
                for digit, values in metrics["per_class"].items()  # type: ignore[union-attr]
                for kind in ("precision", "recall")
            }
        )
        rejection = metrics["non_digits"]  # type: ignore[index]
        groups = {
            **{g: rejection[g] for g in ("all", "seen", "held_out")},
            **rejection["by_family"],
        }
        mlflow.log_metrics(
            {
                f"non_digits_{group}_{figure}": value
                for group, figures in groups.items()
                for figure, value in figures.items()
                if figure != "count"
            }
        )
        mlflow.log_dict(metrics, "evaluation/metrics.json")
        for name, figure in figure_set.items():
            mlflow.log_figure(figure, f"evaluation/{name}")
    return metrics
