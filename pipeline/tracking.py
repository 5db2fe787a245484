"""MLflow set-up: the tracking server from the environment, or the embedded local default."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from mnist_core.settings import MlflowSettings


def _is_local_store(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri


def configure_mlflow(settings: MlflowSettings) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; return its id.

    With the embedded SQLite default, artifacts go to a local folder in the project; a real
    tracking server keeps its own artifact store.
    """
    mlflow.set_tracking_uri(settings.tracking_uri)
    if run_id := os.environ.get("MLFLOW_RUN_ID"):
        # Launched by `mlflow run`, which made the run (and chose its experiment) already.
        return MlflowClient().get_run(run_id).info.experiment_id
    experiment = mlflow.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return experiment.experiment_id
    location = None
    if _is_local_store(settings.tracking_uri):
        location = Path(settings.local_artifact_root).resolve().as_uri()
    experiment_id = MlflowClient().create_experiment(
        settings.experiment_name, artifact_location=location
    )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit() -> str:
    """The checked-out commit (`-dirty` when tracked files changed); `unknown` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
