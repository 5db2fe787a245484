"""The processed dataset on disk: one compressed `.npz` of uint8 images and labels per split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


def split_path(data_dir: Path, split: str) -> Path:
    return data_dir / f"{split}.npz"


def save_split(data_dir: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    np.savez_compressed(split_path(data_dir, split), images=images, labels=labels)


def load_split(data_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 28, 28) and int64 labels (N,) of one split."""
    path = split_path(data_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"No {split} split at {path}: run `dvc repro preprocess` first.")
    with np.load(path) as arrays:
        return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]).long()


def data_version(data_dir: Path) -> str:
    """The content hash that `preprocess` recorded for this dataset, for tagging runs."""
    manifest = data_dir / MANIFEST
    return json.loads(manifest.read_text())["data_version"] if manifest.is_file() else "unknown"
