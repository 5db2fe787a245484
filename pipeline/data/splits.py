"""Raw IDX files → uint8 arrays in train/val/test splits, with a seeded stratified validation split.

The validation images come out of the 60k training images; the 10k test images are kept apart,
untouched, for the final evaluation only.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_core.labels import NUM_CLASSES
from pipeline.data.datasets import MANIFEST, SPLITS, save_split
from pipeline.io import atomic_directory, sha256_of, write_json
from pipeline.params import PreprocessParams

log = logging.getLogger(__name__)

RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class IdxFormatError(ValueError):
    """A file is not a well-formed MNIST IDX file."""


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an IDX image file and its label file as uint8 arrays (N, 28, 28) and (N,)."""
    try:
        images, labels = read_image_file(str(images_path)), read_label_file(str(labels_path))
    except (AssertionError, RuntimeError, ValueError, KeyError) as error:
        raise IdxFormatError(
            f"{images_path} / {labels_path}: not MNIST IDX data ({error})"
        ) from error
    if images.ndim != 3 or images.dtype != torch.uint8 or labels.ndim != 1:
        raise IdxFormatError(f"{images_path}: expected uint8 images (N, H, W), got {images.shape}")
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return images.numpy(), labels.numpy()


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded hold-out: (train_images, train_labels, val_images, val_labels)."""
    train_x, val_x, train_y, val_y = train_test_split(
        images, labels, test_size=val_size, stratify=labels, random_state=seed
    )
    return train_x, train_y, val_x, val_y


def class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    return {str(digit): int(count) for digit, count in enumerate(counts)}


def preprocess(params: PreprocessParams) -> dict[str, dict[str, int]]:
    """Write train/val/test arrays and a manifest into `out_dir`; return class counts per split."""
    train_x, train_y = read_idx_pair(*(params.raw_dir / name for name in RAW_FILES["train"]))
    test_x, test_y = read_idx_pair(*(params.raw_dir / name for name in RAW_FILES["test"]))
    train_x, train_y, val_x, val_y = split_train_val(train_x, train_y, params.val_size, params.seed)
    splits = {"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, test_y)}

    # The data version names the raw bytes and the split, so a run can say what it learnt from.
    raw_digests = [sha256_of(params.raw_dir / name) for pair in RAW_FILES.values() for name in pair]
    version = hashlib.sha256(f"{raw_digests}{params.val_size}{params.seed}".encode()).hexdigest()
    with atomic_directory(params.out_dir) as staging:
        for split in SPLITS:
            save_split(staging, split, *splits[split])
        write_json(staging / MANIFEST, {"data_version": version[:12]})

    counts = {split: class_counts(labels) for split, (_, labels) in splits.items()}
    metrics = {split: {"total": len(splits[split][1]), **c} for split, c in counts.items()}
    write_json(params.metrics, metrics)
    for split in SPLITS:
        log.info("%s: %d images", split, len(splits[split][1]))
    return counts
