"""The quality gate's figures measured on validation data, to choose its floors on (the test
figures are the gate's to check, never to tune on):

    python -m pipeline.registry.gate_figures [--params params.yaml] [-S section.key=value]

For the model at `evaluate.onnx_path` (with its own `uncertain` threshold): accuracy on the
validation split, the share of the held-out non-digit families' validation rendition flagged,
and the accuracy on real-looking digits drawn with other seeds than the evaluate stage's. Prints
each beside the floor in `params.yaml`.
"""

from __future__ import annotations

import json

import numpy as np

from mnist_core.classifier import DigitClassifier
from pipeline.cli import parse_stage_args
from pipeline.data.datasets import NonDigitSet, load_split, split_path
from pipeline.evaluation.scoring import non_digit_metrics, real_picture_metrics
from pipeline.params import Params
from pipeline.registry.policy import GATE

# Renditions of the real-looking digits that the evaluate stage (seed 0) never scores.
VALIDATION_PICTURE_SEEDS = (1, 2, 3)


def validation_figures(params: Params) -> dict[str, float]:
    """The gate's metrics (by their evaluate-stage names) on validation data; the real pictures'
    figure is the lowest over `VALIDATION_PICTURE_SEEDS`. The seed drawings have no validation
    counterpart: they are three fixed pictures, all of which must be right."""
    classifier = DigitClassifier(params.evaluate.onnx_path)
    images, labels = (tensor.numpy() for tensor in load_split(params.evaluate.data_dir, "val"))
    probabilities = classifier.predict_proba(images)
    non_digits = NonDigitSet.load(split_path(params.non_digits.out_dir, "val"))
    flagged = non_digit_metrics(classifier, non_digits, probabilities.max(axis=1))
    pictures = [
        real_picture_metrics(classifier, seed)["real_pictures_accuracy"]
        for seed in VALIDATION_PICTURE_SEEDS
    ]
    return {
        "test_accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "real_pictures_accuracy": float(np.min(pictures)),
        "held_out_non_digits_flagged": float(flagged["held_out_non_digits_flagged"]),
    }


def main(argv: list[str] | None = None) -> None:
    params = parse_stage_args(__doc__ or "", argv)
    figures = validation_figures(params)
    rows = {
        metric: {
            "validation": figures.get(metric),
            "floor": getattr(params.registration, parameter),
            "parameter": f"register.{parameter}",
        }
        for metric, parameter in GATE.items()
    }
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
