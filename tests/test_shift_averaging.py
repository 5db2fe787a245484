"""Test-time shifts in the model: the logits averaged over the 1-pixel translations of the
image, one batch through the network, and the same in the exported ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mnist_core.classifier import DigitClassifier
from pipeline.training.export import export_onnx
from pipeline.training.model import predict_logits
from pipeline.training.shift_averaging import BACKGROUND, ShiftAveraged, shift_averaged
from pipeline.training.tensors import to_model_input
from tests.synthetic import render_digits
from tests.test_export import settled_network


def translated(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """`images` moved dx pixels right and dy down, the paper's white coming in at the edge."""
    moved = torch.full_like(images, BACKGROUND)
    height, width = images.shape[-2:]
    source = images[..., max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
    moved[..., max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)] = source
    return moved


def test_the_logits_are_the_mean_over_the_nine_translations() -> None:
    network = settled_network((8, 16), 1)
    images = to_model_input(render_digits(6, seed=2)[0])
    shifts = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    with torch.no_grad():
        expected = torch.stack([network(translated(images, dx, dy)) for dx, dy in shifts]).mean(0)
        got = ShiftAveraged(network, 1)(images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # A shift moves the picture: the average is not the plain answer.
    assert not torch.allclose(got, network(images), atol=1e-3)


def test_one_batch_through_the_network() -> None:
    calls: list[int] = []

    class Counting(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            calls.append(len(images))
            return images.flatten(1)[:, :10]

    ShiftAveraged(Counting(), 1)(torch.zeros(4, 1, 28, 28))
    assert calls == [36]


def test_no_radius_is_the_network_itself_and_a_negative_one_is_refused() -> None:
    network = settled_network((8, 16), 1)
    assert shift_averaged(network, 0) is network
    with pytest.raises(ValueError, match="at least 1 pixel"):
        ShiftAveraged(network, 0)


def test_the_exported_graph_averages_the_shifts_at_any_batch_size(tmp_path: Path) -> None:
    averaged = ShiftAveraged(settled_network((8, 16), 1), 1).eval()
    export_onnx(averaged, tmp_path / "model.onnx")
    images, _ = render_digits(20, seed=4)
    expected = predict_logits(averaged, torch.from_numpy(images)).numpy()
    classifier = DigitClassifier(tmp_path / "model.onnx", threads=1)
    for batch in (images[:1], images[:5], images):
        np.testing.assert_allclose(
            classifier.scores(batch).logits, expected[: len(batch)], rtol=1e-4, atol=1e-4
        )
