"""Stage `register`: register the evaluated model with its lineage; the promotion policy decides
whether it moves the `production` alias.

Every evaluated model becomes a version, tagged with where it came from (git commit and whether
the tree was dirty, branch, DVC experiment, data version, ONNX sha256) and with the gate's
verdict. `production` never moves on its own to a version a person moved it away from (a
rollback, or promoting another version by hand), and otherwise moves only
- to the first servable version of an empty registry (so a fresh `make run` serves), or
- from a `dvc repro` of a clean tree on the configured branch, with `register.promote: auto`,
  when the gate passes and the version beats production's test accuracy (a tie keeps it).
A `dvc exp run`, a dirty tree or another branch never moves it: a version that passes the gate
gets the `challenger` alias instead, for `mnist-registry promote` to promote by hand.
"""

from __future__ import annotations

import sys

from mnist_core.settings import MlflowSettings
from pipeline.cli import parse_stage_args
from pipeline.registry.aliases import RegistryError
from pipeline.registry.policy import MetricsMismatch
from pipeline.registry.publish import register


def main(argv: list[str] | None = None) -> None:
    params = parse_stage_args(__doc__ or "", argv).registration
    try:
        register(params, MlflowSettings())
    except (RegistryError, MetricsMismatch) as error:
        sys.exit(f"register: {error}")


if __name__ == "__main__":
    main()
