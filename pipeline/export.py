"""Export the trained network to a self-contained ONNX model (the format the registry holds)."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from mnist_core.classifier import LOGITS, PIXELS, PROBABILITIES
from mnist_core.imaging import IMAGE_SIZE, MNIST_MEAN, MNIST_STD
from pipeline.io import atomic_file

OPSET = 18


class ServableDigitModel(nn.Module):
    """Grey levels 0-255 in, logits and probabilities out: the normalisation is in the graph."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network((pixels / 255 - MNIST_MEAN) / MNIST_STD)
        return logits, logits.softmax(dim=1)


def export_onnx(network: nn.Module, path: Path) -> None:
    """Write `network` (on the CPU, in eval mode) to `path` as ONNX with a free batch dimension."""
    servable = ServableDigitModel(network.cpu().eval()).eval()
    example = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    program = torch.onnx.export(
        servable,
        (example,),
        input_names=[PIXELS],
        output_names=[LOGITS, PROBABILITIES],
        opset_version=OPSET,
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
    )
    model = program.model_proto
    onnx.checker.check_model(model)
    with atomic_file(path) as tmp:
        onnx.save_model(model, tmp)
