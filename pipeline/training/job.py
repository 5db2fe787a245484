"""The training job: fit the CNN, track the run in MLflow, keep the best epoch by validation.

Writes the best weights (`model_path`), the MLflow run and model it logged (`run_info`), DVC
metrics and a per-epoch history for `dvc plots`.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torch import nn

from mnist_core.classifier import ModelMetadata
from mnist_core.settings import MlflowSettings
from pipeline.data.datasets import data_version, load_split, split_path
from pipeline.io import atomic_file, write_json
from pipeline.params import TrainParams
from pipeline.registry.lineage import source_tree
from pipeline.registry.tracking import configure_mlflow, log_dataset, log_onnx_model
from pipeline.training import calibration
from pipeline.training.checkpoint import Checkpoint, fingerprint
from pipeline.training.committee import clear_checkpoints, fit_committee
from pipeline.training.distributed import Cluster
from pipeline.training.export import export_onnx
from pipeline.training.loop import (
    EpochResult,
    FitResult,
    add_feedback,
    load_feedback,
    load_outliers,
    use_bf16,
)
from pipeline.training.model import predict_logits, save_checkpoint
from pipeline.training.shift_averaging import shift_averaged

log = logging.getLogger(__name__)

HISTORY_FIELDS = [field.name for field in dataclasses.fields(EpochResult)]
# Stage inputs and outputs, not hyperparameters: kept out of the MLflow params.
PATH_FIELDS = {
    name
    for name, field in TrainParams.model_fields.items()
    if field.annotation in (Path, Path | None)
}


def run_name(params: TrainParams) -> str:
    widths = "-".join(str(c) for c in params.channels)
    committee = f"-x{params.committee}" if params.committee > 1 else ""
    return f"cnn{widths}{committee}-e{params.epochs}-lr{params.max_lr:g}-seed{params.seed}"


def flat_params(params: TrainParams) -> dict[str, object]:
    """Hyperparameters as flat MLflow params (`augment.degrees`, …); file paths left out."""
    flat: dict[str, object] = {}
    for key, value in params.model_dump(mode="json", exclude=PATH_FIELDS).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


def write_history(path: Path, history: list[EpochResult]) -> None:
    with atomic_file(path) as tmp, tmp.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(dataclasses.asdict(result) for result in history)


def calibrate(
    network: nn.Module, val: tuple[torch.Tensor, torch.Tensor], params: TrainParams
) -> tuple[ModelMetadata, dict[str, float]]:
    """Fit the temperature and the `uncertain` threshold on the validation split; return them
    and the validation figures before and after."""
    logits = predict_logits(network, val[0]).float().cpu().numpy()
    labels = val[1].numpy()
    temperature = calibration.fit_temperature(logits, labels)
    raw, calibrated = (calibration.probabilities(logits, t) for t in (1.0, temperature))
    metadata = ModelMetadata(
        temperature=temperature,
        uncertain_below=calibration.uncertain_threshold(calibrated, params.uncertain_digit_share),
    )
    figures = {
        "temperature": temperature,
        "uncertain_below": metadata.uncertain_below,
        "val_ece_uncalibrated": calibration.expected_calibration_error(raw, labels),
        "val_ece": calibration.expected_calibration_error(calibrated, labels),
        "val_loss_uncalibrated": calibration.cross_entropy(logits, labels),
        "val_loss_calibrated": calibration.cross_entropy(logits / temperature, labels),
    }
    return metadata, figures


def log_servable_model(
    network: nn.Module, params: TrainParams, metadata: ModelMetadata, example: np.ndarray
) -> str:
    """Export the network (with its test-time shifts, if any) to ONNX with its calibration and
    log that as the run's model; the PyTorch weights go beside it as a plain artifact. Returns
    the model URI."""
    export_onnx(network, params.onnx_path, metadata)
    model_uri = log_onnx_model(params.onnx_path, example)
    mlflow.log_artifact(str(params.model_path), artifact_path="pytorch")
    return model_uri


def resumable_run(checkpoint: Checkpoint) -> str | None:
    """The MLflow run a saved checkpoint was logging to, if it is still in the tracking store."""
    saved = checkpoint.load()
    run_id = saved["extra"].get("run_id") if saved else None
    if run_id is None:
        return None
    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        return None
    return run_id


def train(
    params: TrainParams, settings: MlflowSettings, cluster: Cluster, device: torch.device
) -> FitResult | None:
    """Train and track one run; write the stage outputs. In a distributed run the processes
    other than the main one only train their shard: no MLflow, no outputs."""
    train_split, val_split = (
        load_split(params.data_dir, "train"),
        load_split(params.data_dir, "val"),
    )
    data = data_version(params.data_dir)
    feedback = load_feedback(params)
    train_split, outliers = add_feedback(
        train_split, load_outliers(params), feedback, params.feedback_weight
    )
    if not cluster.is_main:  # the main process reads the checkpoint and hands it over
        fit_committee(params, train_split, val_split, device, cluster=cluster, outliers=outliers)
        return None
    hyperparameters = params.model_dump(mode="json", exclude=PATH_FIELDS | {"resume"})
    identity = {**hyperparameters, "world_size": cluster.world_size}
    if len(feedback):  # other feedback, another run: a checkpoint of the old one is no use
        identity["feedback"] = sorted(feedback.input_hash.tolist())
    checkpoint = Checkpoint(params.checkpoint_path, fingerprint(identity, data))
    experiment_id = configure_mlflow(settings)

    def log_epoch(result: EpochResult) -> None:
        metrics = {
            "train_loss": result.train_loss,
            "train_objective": result.train_objective,
            "val_loss": result.val_loss,
            "val_accuracy": result.val_accuracy,
            "learning_rate": result.learning_rate,
            "epoch_seconds": result.seconds,
        }
        if params.ema_decay:
            metrics |= {
                "ema_val_loss": result.ema_val_loss,
                "ema_val_accuracy": result.ema_val_accuracy,
            }
        mlflow.log_metrics(metrics, step=result.epoch)

    if not params.resume:
        clear_checkpoints(checkpoint)
    resumed_run_id = resumable_run(checkpoint)
    name = None if resumed_run_id else run_name(params)
    tree = source_tree()
    with mlflow.start_run(run_id=resumed_run_id, run_name=name) as run:
        checkpoint = dataclasses.replace(checkpoint, extra={"run_id": run.info.run_id})
        mlflow.set_tags(
            {
                "git_commit": tree.commit,
                "git_dirty": str(tree.dirty).lower(),
                "data_version": data,
                "device": str(device),
                "precision": "bf16" if use_bf16(params, device) else "fp32",
                "torch_version": torch.__version__,
                "world_size": str(cluster.world_size),
            }
        )
        mlflow.log_params(flat_params(params))
        mlflow.log_params(
            {
                "train_size": len(train_split[1]),
                "val_size": len(val_split[1]),
                "non_digits_size": 0 if outliers is None else len(outliers),
                "feedback_digits": len(feedback.digits()[1]),
                "feedback_non_digits": len(feedback.non_digits()),
            }
        )
        for split, (images, labels) in (("train", train_split), ("val", val_split)):
            path = split_path(params.data_dir, split)
            log_dataset(path, split, images.numpy(), labels.numpy(), data)
        committee = fit_committee(
            params,
            train_split,
            val_split,
            device,
            on_epoch=log_epoch,
            checkpoint=checkpoint,
            cluster=cluster,
            outliers=outliers,
        )
        assert committee is not None  # the main process gets the result
        result = committee.members[0]
        seconds = sum(r.seconds for r in committee.history)  # every epoch, resumed ones too
        servable = shift_averaged(committee.model, params.test_time_shift)
        metadata, calibrated = calibrate(servable, val_split, params)
        log.info(
            "temperature %.3f: validation ECE %.4f → %.4f; `uncertain` below %.3f",
            metadata.temperature, calibrated["val_ece_uncalibrated"], calibrated["val_ece"],
            metadata.uncertain_below,
        )  # fmt: skip
        summary = {
            "best_epoch": result.best.epoch,
            "best_val_accuracy": result.best.score[0],
            "best_val_loss": -result.best.score[1],
            "train_seconds": seconds,
            "seconds_per_epoch": float(np.median([r.seconds for r in committee.history])),
            **calibrated,
        }
        if params.committee > 1:  # `best_*`: member 0's, the single network of the seed
            for number, member in enumerate(committee.members):
                summary[f"member{number}_best_val_accuracy"] = member.best.score[0]
        mlflow.log_metrics(summary)
        mlflow.set_tag("kept_weights", result.best.kept)
        # The PyTorch weights of the single network (a committee's member 0): the ONNX file is
        # what is served, whole committee and all.
        save_checkpoint(result.model, params.model_path)
        example = train_split[0][:4].numpy()
        model_uri = log_servable_model(servable, params, metadata, example)
        log.info("Run %s logged model %s", run.info.run_id, model_uri)

    write_history(params.history, committee.history)
    write_json(params.metrics, summary)
    write_json(
        params.run_info,
        {
            "run_id": run.info.run_id,
            "experiment_id": experiment_id,
            "model_uri": model_uri,
            "tracking_uri": settings.tracking_uri,
        },
    )
    # Only now: a failure above (calibration, export, the upload) resumes from the last epoch.
    clear_checkpoints(checkpoint)
    return result
