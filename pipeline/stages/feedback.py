"""Stage `feedback`: export the accepted user feedback of the API's store to a versioned dataset.

Only feedback a reviewer accepted (`mnist-feedback accept …`) is exported, one row per distinct
28×28 input. Each input lands by its sha256 on one side for good: `train.npz` (the train stage
adds it) or `held_out.npz` (the evaluate stage scores it, the gate compares it).

DVC cannot see a database, so the stage runs on every `dvc repro` (`always_changed`), and its
outputs are `persist`ent: a file is rewritten only when its content changes, so an unchanged
store leaves `dvc.lock` and everything downstream as they were. The store is the API's
(MNIST_STORE_URL); with no store or no accepted feedback the sets are empty.

    python -m pipeline.stages.feedback
"""

from __future__ import annotations

from monitoring.settings import MonitoringSettings
from pipeline.cli import parse_stage_args
from pipeline.data.feedback_sets import export


def main(argv: list[str] | None = None) -> None:
    export(parse_stage_args(__doc__ or "", argv).feedback, MonitoringSettings().store_url)


if __name__ == "__main__":
    main()
