"""Stage `train`: fit the CNN, track the run in MLflow, keep the best epoch by validation accuracy.

Writes the best weights (`model_path`), the MLflow run and model it logged (`run_info`), DVC
metrics and a per-epoch history for `dvc plots`. Where `train.processes` (a count, or `auto`: one
per GPU, two on a CPU) comes to more than one, the stage starts itself again under torchrun, one
data-parallel process each.
"""

from __future__ import annotations

import sys

from mnist_core.settings import MlflowSettings
from pipeline.cli import parse_stage_args
from pipeline.training.distributed import join, launch, leave, under_torchrun
from pipeline.training.job import train
from pipeline.training.placement import place


def main(argv: list[str] | None = None) -> None:
    params = parse_stage_args(__doc__ or "", argv).train
    placement = place(params.processes, params.batch_size)
    if placement.processes > 1 and not under_torchrun():
        launch(placement, __spec__.name, sys.argv[1:] if argv is None else argv)
        return
    cluster, device = join()
    try:
        train(params, MlflowSettings(), cluster, device)
    finally:
        leave()


if __name__ == "__main__":
    main()
