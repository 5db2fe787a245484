"""Stage `evaluate`: score the exported ONNX model on the held-out test set, the Paint digits and
two generated sets that are not MNIST: real-looking digits (fonts, mouse drawings;
`pipeline.datagen.digit_pictures`) and the test rendition of every non-digit family
(`pipeline.datagen.non_digit_families`), which should come out `uncertain` — reported per family,
the families training never saw apart.

The model is run by `mnist_core.classifier`, the API's own inference code, and its calibration
and `uncertain` threshold are the ones in the file, so what is evaluated is what is served. The
test set is scored here once; nothing is chosen on it. Everything goes to DVC metrics/plots files
and to the MLflow run that trained the model.
"""

from __future__ import annotations

from mnist_core.settings import MlflowSettings
from pipeline.cli import parse_stage_args
from pipeline.evaluation.scoring import evaluate


def main(argv: list[str] | None = None) -> None:
    evaluate(parse_stage_args(__doc__ or "", argv).evaluate, MlflowSettings())


if __name__ == "__main__":
    main()
