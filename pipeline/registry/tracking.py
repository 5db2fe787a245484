"""MLflow set-up (the tracking server from the environment, or the embedded local default) and
the logging of the servable ONNX model."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import mlflow
import mlflow.data
import mlflow.onnx
import numpy as np
import onnx
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from mnist_core.classifier import LOGITS, PROBABILITIES, DigitClassifier
from mnist_core.imaging import IMAGE_SIZE
from mnist_core.settings import MlflowSettings
from pipeline.io import sha256_of

# Marks the experiment as model training, so the MLflow UI opens it on its training runs (not on
# the GenAI overview it shows for experiments of unknown kind).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# MLflow's dataset digest column holds 36 characters; DVC's data version is a longer hash.
DIGEST_LENGTH = 16
DATASET_CONTEXT = {"train": "training", "val": "validation", "test": "testing"}
RELOGGED_TAG = "relogged_from_run"

log = logging.getLogger(__name__)


def _is_local_store(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri


def configure_mlflow(settings: MlflowSettings) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; return its id.

    With the embedded SQLite default, artifacts go to a local folder in the project; a real
    tracking server keeps its own artifact store.
    """
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    if run_id := os.environ.get("MLFLOW_RUN_ID"):
        # Launched by `mlflow run`, which made the run (and chose its experiment) already.
        return client.get_run(run_id).info.experiment_id
    experiment = mlflow.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
        for key, value in EXPERIMENT_KIND.items():  # experiments made before it was set
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment_id, key, value)
    else:
        location = None
        if _is_local_store(settings.tracking_uri):
            location = Path(settings.local_artifact_root).resolve().as_uri()
        experiment_id = client.create_experiment(
            settings.experiment_name, artifact_location=location, tags=EXPERIMENT_KIND
        )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_dataset(
    path: Path, split: str, images: np.ndarray, labels: np.ndarray, data_version: str
) -> None:
    """Record one split of the DVC-tracked dataset (its file: `path`) as an input of the active
    run, for the UI's Dataset column and lineage: DVC's data version is the digest."""
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice, then warns that it cannot choose.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        dataset = mlflow.data.from_numpy(
            images,
            source=f"{path}#data_version={data_version}",
            targets=labels,
            name=f"mnist-{split}",
            digest=data_version[:DIGEST_LENGTH],
        )
    mlflow.log_input(dataset, context=DATASET_CONTEXT.get(split, split))


def log_onnx_model(onnx_path: Path, example: np.ndarray) -> str:
    """Log an exported ONNX file as the active run's model (MLflow's `onnx` flavor, with a
    signature and an input example); return its model URI.

    The registry never holds a pickle: any version loads with ONNX Runtime alone, whatever code
    trained it. `example` is a few uint8 MNIST-style images (N, 28, 28).
    """
    inputs = example[:, np.newaxis].astype(np.float32)  # (N, 1, 28, 28) grey levels 0-255
    scores = DigitClassifier(onnx_path).scores(example)
    info = mlflow.onnx.log_model(
        onnx.load(str(onnx_path)),
        name="model",
        signature=infer_signature(
            inputs, {LOGITS: scores.logits, PROBABILITIES: scores.probabilities}
        ),
        input_example=inputs,
        save_as_external_data=False,
        # What MLflow would infer, stated: inferring it loads the model in a subprocess, which
        # took 10-11 s of every log against 0.2 s (most of the time a small model is logged).
        pip_requirements=[
            *mlflow.onnx.get_default_pip_requirements(),
            f"numpy=={np.__version__}",
        ],
    )
    mlflow.set_tag("onnx_sha256", sha256_of(onnx_path))
    return info.model_uri


def run_in_this_store(
    client: MlflowClient, run: Mapping[str, str], onnx_path: Path, metrics: Mapping[str, object]
) -> tuple[str, str]:
    """The training run (`models/run.json`) and its model URI, in the configured store. When
    this store does not know the run (a new server, a deleted mlflow.db, a `dvc pull` on another
    machine), the DVC-tracked ONNX model is logged again, once, in a new run with `metrics`, so
    that evaluation and the registry can always be rebuilt from DVC's outputs."""
    try:
        client.get_run(run["run_id"])
        return run["run_id"], run["model_uri"]
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # a store that cannot answer is not an empty store
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    for earlier in client.search_runs(experiments, f"tags.{RELOGGED_TAG} = '{run['run_id']}'"):
        return earlier.info.run_id, f"runs:/{earlier.info.run_id}/model"  # logged again before
    log.warning("Run %s is not in this tracking store: logging %s again", run["run_id"], onnx_path)
    with mlflow.start_run(run_name="relogged-" + run["run_id"][:8]) as relogged:
        mlflow.set_tag(RELOGGED_TAG, run["run_id"])
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        example = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        model_uri = log_onnx_model(onnx_path, example)
    return relogged.info.run_id, model_uri
