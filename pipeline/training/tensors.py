"""The torch side of the shared preprocessing: uint8 MNIST-style images → the network's input.

Pictures become MNIST-style images in `mnist_core.imaging` (shared with the API); this module only
scales and standardises them for training, with the same constants the exported model uses.
"""

from __future__ import annotations

import numpy as np
import torch

from mnist_core.imaging import MNIST_MEAN, MNIST_STD


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, 1, H, W) → float32 (N, 1, H, W) in [0, 1]."""
    if pixels.ndim == 3:
        pixels = pixels.unsqueeze(1)
    return pixels.to(torch.float32) / 255


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Standardise [0, 1] images with the training set's mean and standard deviation."""
    return (images - MNIST_MEAN) / MNIST_STD


def to_model_input(pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 MNIST-style images → the normalised float batch the network takes."""
    return normalize(to_unit(torch.as_tensor(pixels)))
