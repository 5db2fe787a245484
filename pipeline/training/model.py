"""The digit classifier, shared by training, evaluation and serving."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mnist_core.imaging import IMAGE_SIZE
from mnist_core.labels import NUM_CLASSES
from pipeline.io import atomic_file
from pipeline.training.tensors import to_model_input


def _conv_block(in_channels: int, out_channels: int, convs: int) -> nn.Sequential:
    """(conv → BatchNorm → ReLU) × `convs`, then a 2×2 max-pool that halves the image."""
    layers: list[nn.Module] = []
    for index in range(convs):
        layers += [
            nn.Conv2d(
                in_channels if index == 0 else out_channels, out_channels, 3, padding=1, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    # ceil_mode: 7 → 4 keeps the edge row and column that 7 → 3 would drop.
    return nn.Sequential(*layers, nn.MaxPool2d(2, ceil_mode=True))


class DigitCNN(nn.Module):
    """Three conv blocks (12 layers) and a two-layer classifier with dropout.

    The classifier's input size is measured from the feature extractor rather than written down,
    so the network follows `channels` and the image size.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        hidden_units: int = 256,
        dropout: float = 0.25,
        convs_per_block: int | Sequence[int] = 1,
        image_size: int = IMAGE_SIZE,
    ) -> None:
        super().__init__()
        # One count for every block, or one per block: a single conv at full resolution costs a
        # ninth of a second one there, where a 28×28 layer of 32→32 channels is a quarter of the
        # default's FLOPs.
        convs = (
            [convs_per_block] * len(channels)
            if isinstance(convs_per_block, int)
            else list(convs_per_block)
        )
        if len(convs) != len(channels):
            raise ValueError(
                f"convs_per_block lists {len(convs)} counts for {len(channels)} blocks of channels"
            )
        self.architecture = {
            "channels": list(channels),
            "hidden_units": hidden_units,
            "dropout": dropout,
            "convs_per_block": convs_per_block if isinstance(convs_per_block, int) else convs,
            "image_size": image_size,
        }
        widths = [1, *channels]
        self.features = nn.Sequential(
            *(
                _conv_block(c_in, c_out, count)
                for (c_in, c_out), count in zip(itertools.pairwise(widths), convs, strict=True)
            )
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, image_size, image_size)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(flat, hidden_units),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_units, NUM_CLASSES),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, 1, 28, 28) → logits (N, 10)."""
        return self.classifier(self.features(images))


# CPU flags (Linux /proc/cpuinfo) of bfloat16 arithmetic in hardware: AVX-512 BF16 and AMX on
# x86, the BF16 extension on Arm. oneDNN also "supports" bf16 on plain AVX-512 by emulating it,
# which is slower than fp32, so its own check is not enough.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of this machine's first CPU (empty where /proc/cpuinfo is absent)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether `device` computes bfloat16 in hardware (else autocast would only emulate it)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return bool(BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags))


@torch.inference_mode()
def predict_logits(model: nn.Module, pixels: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits for uint8 MNIST-style images (N, 28, 28), computed in batches in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [
        model(to_model_input(pixels[start : start + batch_size]).to(device))
        for start in range(0, len(pixels), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0, NUM_CLASSES)


def predict_proba(model: nn.Module, pixels: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities (N, 10) for uint8 MNIST-style images."""
    return predict_logits(model, pixels, batch_size).softmax(dim=1)


def save_checkpoint(model: DigitCNN, path: Path) -> None:
    """Save the weights with the architecture they belong to."""
    with atomic_file(path) as tmp:
        torch.save({"architecture": model.architecture, "state_dict": model.state_dict()}, tmp)


def load_checkpoint(path: Path, device: torch.device | None = None) -> DigitCNN:
    """Rebuild a `DigitCNN` from `save_checkpoint`'s file, in eval mode."""
    if not path.is_file():
        raise FileNotFoundError(f"No model at {path}: run `dvc repro train` first.")
    checkpoint = torch.load(path, map_location=device or "cpu", weights_only=True)
    model = DigitCNN(**checkpoint["architecture"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device or "cpu").eval()
