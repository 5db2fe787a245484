"""Test-time augmentation inside the model: the logits averaged over small translations.

A digit written a pixel off-centre is still the same digit; averaging the network's logits over
the image shifted by up to `radius` pixels each way ((2·radius + 1)² views, one batch through the
network) smooths over where the preprocessing happened to centre it. It is a module, so it is
calibrated, scored and exported to ONNX as one graph: serving gets it without knowing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnist_core.imaging import MNIST_MEAN, MNIST_STD

# The paper's white, normalised as the network sees it: what a shift brings in at the edge.
BACKGROUND = -MNIST_MEAN / MNIST_STD


class ShiftAveraged(nn.Module):
    """`network`'s logits averaged over the normalised image (N, 1, H, W) and its translations by
    up to `radius` pixels in each direction."""

    def __init__(self, network: nn.Module, radius: int) -> None:
        super().__init__()
        if radius < 1:
            raise ValueError(f"a shift radius of {radius}: at least 1 pixel, or no averaging")
        self.network = network
        self.radius = radius

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        r = self.radius
        height, width = images.shape[-2:]
        padded = F.pad(images, (r, r, r, r), value=BACKGROUND)
        views = [
            padded[:, :, r + dy : r + dy + height, r + dx : r + dx + width]
            for dy in range(-r, r + 1)
            for dx in range(-r, r + 1)
        ]
        logits = self.network(torch.cat(views))
        return logits.reshape(len(views), images.shape[0], -1).mean(dim=0)


def shift_averaged(network: nn.Module, radius: int) -> nn.Module:
    """`network` averaged over shifts of up to `radius` pixels; itself where `radius` is 0."""
    return ShiftAveraged(network, radius) if radius else network
