"""The exported ONNX model: same answers as the PyTorch network, any batch size, no torch needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_core.classifier import DigitClassifier, ModelMetadata
from pipeline.training.export import export_onnx
from pipeline.training.model import DigitCNN, predict_logits, predict_proba
from tests.synthetic import render_digits


def settled_network(channels: tuple[int, ...], convs_per_block: int) -> DigitCNN:
    """A network whose BatchNorm statistics have moved off their defaults, as after training."""
    torch.manual_seed(0)
    network = DigitCNN(channels, hidden_units=32, convs_per_block=convs_per_block)
    images, _ = render_digits(64, seed=5)
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network((torch.from_numpy(images).float().unsqueeze(1) / 255 - 0.13) / 0.31)
    return network.eval()


@pytest.mark.parametrize(
    ("channels", "convs_per_block"), [((32, 64, 128), 2), ((8, 16), 1)], ids=["default", "small"]
)
def test_onnx_probabilities_match_torch(
    tmp_path: Path, channels: tuple[int, ...], convs_per_block: int
) -> None:
    network = settled_network(channels, convs_per_block)
    export_onnx(network, tmp_path / "model.onnx")
    images, _ = render_digits(50, seed=9)
    expected = predict_proba(network, torch.from_numpy(images)).numpy()
    classifier = DigitClassifier(tmp_path / "model.onnx", threads=1)
    for batch in (images[:1], images[:7], images):  # the batch dimension is free
        got = classifier.predict_proba(batch)
        assert got.shape == (len(batch), 10)
        assert np.abs(got - expected[: len(batch)]).max() < 1e-4
    scores = classifier.scores(images)
    np.testing.assert_allclose(scores.probabilities.sum(axis=1), 1, atol=1e-5)
    assert (scores.logits.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_temperature_is_in_the_graph_and_metadata_travels_in_the_file(tmp_path: Path) -> None:
    network = settled_network((8, 16), 1)
    metadata = ModelMetadata(temperature=0.5, uncertain_below=0.83)
    export_onnx(network, tmp_path / "model.onnx", metadata)
    images, _ = render_digits(20, seed=3)
    raw_logits = predict_logits(network, torch.from_numpy(images)).numpy()
    classifier = DigitClassifier(tmp_path / "model.onnx", threads=1)
    scores = classifier.scores(images)
    np.testing.assert_allclose(scores.logits, raw_logits / 0.5, rtol=1e-4, atol=1e-4)
    sharpened = torch.from_numpy(raw_logits / 0.5).softmax(dim=1).numpy()
    np.testing.assert_allclose(scores.probabilities, sharpened, atol=1e-5)
    assert classifier.metadata == metadata


def test_metadata_defaults_for_files_without_it(tmp_path: Path) -> None:
    export_onnx(settled_network((8, 16), 1), tmp_path / "model.onnx")
    assert DigitClassifier(tmp_path / "model.onnx", threads=1).metadata == ModelMetadata()
    assert ModelMetadata.from_properties({"temperature": "oops", "uncertain_below": "0.9"}) == (
        ModelMetadata(uncertain_below=0.9)
    )
