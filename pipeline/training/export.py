"""Export the trained network to a self-contained ONNX model (the format the registry holds)."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from mnist_core.classifier import LOGITS, PIXELS, PROBABILITIES, ModelMetadata
from mnist_core.imaging import IMAGE_SIZE, MNIST_MEAN, MNIST_STD
from pipeline.io import atomic_file

OPSET = 18


class ServableDigitModel(nn.Module):
    """Grey levels 0-255 in, calibrated logits and probabilities out: the normalisation and the
    temperature are in the graph, so every consumer of the file gets calibrated probabilities."""

    def __init__(self, network: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.network = network
        self.temperature = temperature

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network((pixels / 255 - MNIST_MEAN) / MNIST_STD) / self.temperature
        return logits, logits.softmax(dim=1)


def export_onnx(network: nn.Module, path: Path, metadata: ModelMetadata | None = None) -> None:
    """Write `network` (on the CPU, in eval mode) to `path` as ONNX with a free batch dimension,
    its logits divided by the metadata's temperature, the metadata in the file's properties."""
    metadata = metadata or ModelMetadata()
    servable = ServableDigitModel(network.cpu().eval(), metadata.temperature).eval()
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
    onnx.helper.set_model_props(model, metadata.as_properties())
    onnx.checker.check_model(model)
    with atomic_file(path) as tmp:
        onnx.save_model(model, tmp)
