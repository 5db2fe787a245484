"""Where a model came from: the git tree, the DVC experiment and the data. The register stage
records it on the model version, and the promotion policy reads it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

DVC_LOCK = Path("dvc.lock")
# Set by `dvc exp run` for every stage it runs (DVC's `dvc.env.DVC_EXP_NAME`); absent for
# `dvc repro`.
EXPERIMENT_VARIABLE = "DVC_EXP_NAME"


@dataclass(frozen=True)
class Lineage:
    commit: str  # the checked-out commit; "unknown" outside a git repository
    dirty: bool  # source files differ from the commit (the outputs DVC writes do not count)
    branch: str | None  # None on a detached HEAD (an experiment run in a temporary copy)
    experiment: str | None  # the name `dvc exp run` gave the run; None for `dvc repro`
    data_version: str
    onnx_sha256: str

    def tags(self) -> dict[str, str]:
        """The lineage as model-version tags (the registry UI lists them)."""
        return {
            "git_commit": self.commit,
            "git_dirty": str(self.dirty).lower(),
            "git_branch": self.branch or "(detached)",
            "dvc_experiment": self.experiment or "-",
            "data_version": self.data_version,
            "onnx_sha256": self.onnx_sha256,
        }


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def dvc_outputs(lock: Path = DVC_LOCK) -> set[Path]:
    """The paths the pipeline's stages write, as `dvc.lock` records them."""
    if not lock.is_file():
        return set()
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {Path(out["path"]) for stage in stages.values() for out in stage.get("outs", [])}


def changed_sources(porcelain: str, outputs: set[Path]) -> list[str]:
    """Tracked files with uncommitted changes (from `git status --porcelain`), leaving out
    `dvc.lock` and the stages' outputs: `dvc repro` rewrites those on a clean tree."""
    ignored = {*outputs, DVC_LOCK}
    changed = []
    for line in porcelain.splitlines():
        path = Path(line[3:].split(" -> ")[-1].strip('"'))
        if not any(path == out or out in path.parents for out in ignored):
            changed.append(str(path))
    return changed


@dataclass(frozen=True)
class SourceTree:
    """The checked-out source: its commit, whether source files differ from it (`dirty`: the
    outputs DVC writes do not count), and its branch (None on a detached HEAD)."""

    commit: str
    dirty: bool
    branch: str | None


def source_tree() -> SourceTree:
    """The source tree the pipeline runs from; outside git, an unknown commit counted dirty."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        branch = _git("rev-parse", "--abbrev-ref", "HEAD").strip()
        porcelain = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return SourceTree("unknown", True, None)
    dirty = bool(changed_sources(porcelain, dvc_outputs()))
    return SourceTree(commit, dirty, None if branch == "HEAD" else branch)


def current_lineage(data_version: str, onnx_sha256: str) -> Lineage:
    """The lineage of the model the pipeline is registering from this working tree."""
    experiment = os.environ.get(EXPERIMENT_VARIABLE) or None
    tree = source_tree()
    return Lineage(tree.commit, tree.dirty, tree.branch, experiment, data_version, onnx_sha256)
