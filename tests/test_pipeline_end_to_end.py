"""The real stages, in order, on tiny synthetic data, into a private SQLite MLflow store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from mnist_core.classifier import DigitClassifier
from mnist_core.settings import MlflowSettings
from pipeline.datagen.digit_pictures import HANDWRITING_KINDS
from pipeline.datagen.non_digit_families import FAMILIES
from pipeline.io import sha256_of
from pipeline.registry.aliases import promote, rollback
from pipeline.registry.commands import main as registry_cli
from pipeline.stages import evaluate, register, train
from serving.model_store import read_onnx_model
from tests.conftest import run_pipeline, work_in

pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline_run(tiny_pipeline: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session's tiny pipeline, read where it ran (a test that changes it takes
    `pipeline_copy`)."""
    work_in(monkeypatch, tiny_pipeline)
    return tiny_pipeline


def test_pipeline_registers_a_production_model(pipeline_run: Path) -> None:
    settings = MlflowSettings()
    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    run_info = json.loads((pipeline_run / "models/run.json").read_text())
    assert version.run_id == run_info["run_id"]

    run = client.get_run(run_info["run_id"])
    assert run.data.params["epochs"] == "2"
    assert run.data.params["augment.degrees"] == "10.0"
    assert {"git_commit", "data_version"} <= set(run.data.tags)
    assert run.data.tags["registry.decision"] == "promoted"
    tags = version.tags
    assert tags["onnx_sha256"] == sha256_of(pipeline_run / "models/model.onnx")
    assert tags["gate"] == "passed" and tags["policy"] == "promote"
    assert tags["promoted_by"] == "register stage" and tags["promoted_from"] == "none"
    assert {"git_commit", "git_dirty", "git_branch", "dvc_experiment", "data_version"} <= set(tags)
    for metric in ("train_loss", "train_objective", "val_loss", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert [m.step for m in history] == [1, 2], metric
    # The logged accuracy is the exported model's, recomputed here from the files themselves.
    with np.load(pipeline_run / "data/processed/test.npz") as test:
        images, labels = test["images"], test["labels"]
    predictions = DigitClassifier(pipeline_run / "models/model.onnx").predict_proba(images)
    accuracy = float((predictions.argmax(axis=1) == labels).mean())
    evaluated = json.loads((pipeline_run / "metrics/evaluate.json").read_text())
    assert evaluated["test_accuracy"] == pytest.approx(accuracy)
    assert run.data.metrics["test_accuracy"] == pytest.approx(accuracy)
    assert evaluated["test_errors"] == round((1 - accuracy) * len(labels))
    assert evaluated["onnx_sha256"] == sha256_of(pipeline_run / "models/model.onnx")
    for path in ("pixels", "png"):  # the test set through the API's preprocessing
        assert 0 <= evaluated[f"api_{path}_errors"] <= len(labels)
        assert evaluated[f"api_{path}_accuracy"] == pytest.approx(
            1 - evaluated[f"api_{path}_errors"] / len(labels)
        )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/training_curves.png",
        "evaluation/misclassified.png",
        "evaluation/reliability.png",
    } <= artifacts


def test_the_mlflow_ui_sees_datasets_kind_and_description(pipeline_run: Path) -> None:
    settings = MlflowSettings()
    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    run = client.get_run(version.run_id)
    data_version = run.data.tags["data_version"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"mnist-train", "mnist-val", "mnist-test"}
    contexts = {name: {t.value for t in d.tags if t.key == "mlflow.data.context"}
                for name, d in inputs.items()}  # fmt: skip
    assert contexts == {"mnist-train": {"training"}, "mnist-val": {"validation"},
                        "mnist-test": {"testing"}}  # fmt: skip
    for dataset in (d.dataset for d in inputs.values()):
        assert data_version.startswith(dataset.digest) and data_version in dataset.source
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    evaluated = json.loads((pipeline_run / "metrics/evaluate.json").read_text())
    assert f"{evaluated['test_accuracy']:.4f}" in version.description
    assert data_version in version.description and "promoted to production" in version.description
    assert float(version.tags["uncertain_below"]) == pytest.approx(
        evaluated["uncertain_below"], rel=1e-3
    )


def test_calibration_and_generated_sets_are_scored(pipeline_run: Path) -> None:
    evaluated = json.loads((pipeline_run / "metrics/evaluate.json").read_text())
    trained = json.loads((pipeline_run / "metrics/train.json").read_text())
    metadata = DigitClassifier(pipeline_run / "models/model.onnx").metadata
    # The temperature and threshold in the served file are the ones fitted on validation data.
    assert metadata.temperature == pytest.approx(trained["temperature"])
    assert metadata.uncertain_below == pytest.approx(trained["uncertain_below"])
    assert evaluated["temperature"] == pytest.approx(trained["temperature"])
    assert 0 <= evaluated["test_ece"] <= 1 and 0 <= evaluated["test_ece_uncalibrated"] <= 1
    assert trained["val_loss_calibrated"] <= trained["val_loss_uncalibrated"] + 1e-9
    assert evaluated["real_pictures_count"] == 800
    assert set(evaluated["real_pictures_by_style"]) == {
        "plain", "thick", "outline", "inverted", "transparent", "mouse"
    }  # fmt: skip
    # The handwriting kinds training never saw, each named with its own figure.
    assert set(evaluated["handwriting_by_kind"]) == set(HANDWRITING_KINDS)
    assert all(0 <= value <= 1 for value in evaluated["handwriting_by_kind"].values())
    # Every non-digit family, 3 each in the tiny params; those training never saw reported apart.
    rejection = evaluated["non_digits"]
    assert set(rejection["by_family"]) == set(FAMILIES)
    assert rejection["all"]["count"] == 3 * len(FAMILIES)
    assert rejection["held_out"]["count"] == 3 * 3 and rejection["seen"]["count"] == 3 * 9
    assert evaluated["held_out_non_digits_flagged"] == rejection["held_out"]["flagged"]
    for figures in (rejection["all"], *rejection["by_family"].values()):
        assert 0 <= figures["flagged"] <= 1 and 0 <= figures["auroc"] <= 1
        # Accepting more digits (99 %) lowers the cut, so at least as many non-digits pass.
        assert figures["accepted_at_99"] >= figures["accepted_at_95"] - 1e-9
    for curve in ("uncalibrated", "calibrated"):
        rows = (pipeline_run / f"plots/evaluate/reliability_{curve}.csv").read_text().splitlines()
        assert rows[0] == "confidence,accuracy,count,bin_upper_edge" and len(rows) > 1
        assert sum(int(row.split(",")[2]) for row in rows[1:]) == 100  # the tiny test split


def test_registered_model_is_self_contained_onnx(pipeline_run: Path) -> None:
    """The registry holds ONNX (no pickle, nothing of this project needed to load it), and it is
    byte for byte the file the evaluate stage scored."""
    settings = MlflowSettings()
    meta = mlflow.models.Model.load(settings.model_uri)
    assert set(meta.flavors) == {"onnx", "python_function"}
    assert meta.flavors["python_function"]["loader_module"] == "mlflow.onnx"
    local = Path(mlflow.artifacts.download_artifacts(settings.model_uri))
    files = {path.name for path in local.rglob("*") if path.is_file()}
    assert not {name for name in files if name.endswith((".pkl", ".pickle", ".pth", ".pt"))}
    onnx_file = local / meta.flavors["onnx"]["data"]
    evaluated = pipeline_run / "models/model.onnx"
    assert onnx_file.read_bytes() == evaluated.read_bytes()
    run = MlflowClient(settings.tracking_uri).get_run(meta.run_id)
    assert run.data.tags["onnx_sha256"] == sha256_of(evaluated)

    example = meta.load_input_example()
    assert example.shape[1:] == (1, 28, 28)
    outputs = mlflow.pyfunc.load_model(settings.model_uri).predict(example)
    assert outputs["probabilities"].shape == (len(example), 10)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1, atol=1e-5)
    # The PyTorch weights stay with the run, for fine-tuning, as a plain state dict.
    weights = mlflow.artifacts.download_artifacts(f"runs:/{meta.run_id}/pytorch/model.pt")
    assert "state_dict" in torch.load(weights, weights_only=True)


def test_stage_outputs_are_written(pipeline_run: Path) -> None:
    for path in (
        "data/raw/train-images-idx3-ubyte",
        "data/processed/train.npz",
        "models/model.pt",
        "metrics/train.json",
        "metrics/evaluate.json",
        "metrics/register.json",
        "plots/train/history.csv",
        "plots/evaluate/predictions.csv",
        "plots/evaluate/confusion_matrix.png",
        "plots/evaluate/training_curves.png",
        "plots/evaluate/misclassified.png",
    ):
        assert (pipeline_run / path).is_file(), path
    evaluation = json.loads((pipeline_run / "metrics/evaluate.json").read_text())
    assert set(evaluation["seed_predictions"]) == {"num_1.png", "num_5.png", "num_7.png"}
    assert set(evaluation["per_class"]) == {str(d) for d in range(10)}


def test_gate_keeps_production_on_a_worse_model_and_rollback_works(pipeline_copy: Path) -> None:
    settings = MlflowSettings()
    client = MlflowClient(settings.tracking_uri)
    first = client.get_model_version_by_alias(settings.model_name, settings.model_alias)

    # A second run whose gate cannot be passed: registered, but production stays. (Only the
    # stages these parameters feed run again, as in `dvc repro`.)
    run_pipeline(
        pipeline_copy / "params.yaml",
        "train.seed=7",
        "register.min_test_accuracy=1.0",
        stages=(train, evaluate, register),
    )
    decision = json.loads((pipeline_copy / "metrics/register.json").read_text())
    assert decision["promoted"] is False and "test_accuracy" in decision["reason"]
    assert decision["version"] == int(first.version) + 1
    served = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    assert str(served.version) == str(first.version)

    promote(client, settings, str(decision["version"]))
    served = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    assert str(served.version) == str(decision["version"])
    rollback(client, settings)
    served = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    assert str(served.version) == str(first.version)


def test_registry_cli_on_an_empty_store(workdir: Path) -> None:
    # A store that does not exist is named, not silently created (a relative sqlite path).
    with pytest.raises(SystemExit, match="which does not exist"):
        registry_cli(["list"])
    (workdir / "mlflow.db").touch()  # an empty store: MLflow makes its tables
    with pytest.raises(SystemExit, match="No model named mnist-cnn is registered yet"):
        registry_cli(["list"])


def test_registry_cli(pipeline_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry_cli(["list"])
    listing = capsys.readouterr().out
    assert re.search(r"^\s+1\s+production\s+\d\.\d{4}", listing, flags=re.MULTILINE), listing

    with pytest.raises(SystemExit, match="nothing to roll back to"):
        registry_cli(["rollback", "--reason", "a test"])
    with pytest.raises(SystemExit, match="has no version 99"):
        registry_cli(["promote", "99", "--reason", "a test"])

    registry_cli(["promote", "1", "--reason", "a test"])
    assert "version 1 now holds 'production'" in capsys.readouterr().out


def test_register_rebuilds_a_lost_registry_from_the_dvc_outputs(
    pipeline_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new, empty tracking store (a deleted mlflow.db, a new server): the register stage logs
    the DVC-tracked ONNX model again and ends with a servable production version, once."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{pipeline_copy / 'new-store.db'}")
    argv = ["--params", str(pipeline_copy / "params.yaml")]
    register.main(argv)
    settings = MlflowSettings()
    client = MlflowClient(settings.tracking_uri)
    production = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    trained_run = json.loads((pipeline_copy / "models/run.json").read_text())["run_id"]
    assert client.get_run(production.run_id).data.tags["relogged_from_run"] == trained_run
    # With the process's default registry elsewhere (an empty store), the version must still
    # come from the store it is asked of.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{pipeline_copy / 'empty.db'}")
    served = read_onnx_model(settings.model_name, production.version, settings.tracking_uri)
    assert served == (pipeline_copy / "models/model.onnx").read_bytes()
    register.main(argv)  # a second `dvc repro`: nothing is logged or registered again
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == 1
    experiment = client.get_run(production.run_id).info.experiment_id
    assert len(client.search_runs([experiment])) == 1


def test_evaluate_works_when_the_training_run_is_unknown_to_the_store(
    pipeline_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After `dvc pull` on another machine, or against a new server: evaluate logs to a run of
    its own (holding the model again), says so, and register registers from that run."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{pipeline_copy / 'other-store.db'}")
    argv = ["--params", str(pipeline_copy / "params.yaml")]
    evaluate.main(argv)
    assert "is not in this tracking store" in caplog.text
    register.main(argv)
    client = MlflowClient(MlflowSettings().tracking_uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trained_run = json.loads((pipeline_copy / "models/run.json").read_text())["run_id"]
    assert run.data.tags["relogged_from_run"] == trained_run
    assert "test_accuracy" in run.data.metrics and "api_png_accuracy" in run.data.metrics
    production = client.get_model_version_by_alias("mnist-cnn", "production")
    assert production.run_id == run.info.run_id


def test_register_refuses_metrics_of_another_model_file(pipeline_copy: Path) -> None:
    metrics_file = pipeline_copy / "metrics/evaluate.json"
    metrics = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps(metrics | {"onnx_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="run the evaluate stage on this model first"):
        register.main(["--params", str(pipeline_copy / "params.yaml")])
