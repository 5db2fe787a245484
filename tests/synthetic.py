"""Small MNIST-like data for tests: digits rendered with Pillow's font, written as IDX files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.io import sha256_of

TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def render_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` white-on-black 28×28 digits of varied size and position, labels cycling 0-9."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    for index, label in enumerate(labels):
        font = ImageFont.load_default(size=int(rng.integers(16, 24)))
        canvas = Image.new("L", (28, 28))
        centre = (14 + rng.integers(-3, 4), 14 + rng.integers(-3, 4))
        ImageDraw.Draw(canvas).text(centre, str(label), fill=255, font=font, anchor="mm")
        images[index] = np.asarray(canvas)
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as MNIST's IDX format (magic 0x0000 08 <ndim>, big-endian dims)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist_dir(directory: Path, train: int = 300, test: int = 100) -> dict[str, str]:
    """Write the four raw files of a tiny MNIST into `directory`; return their SHA-256."""
    directory.mkdir(parents=True, exist_ok=True)
    for (images_name, labels_name), count, seed in ((TRAIN_FILES, train, 1), (TEST_FILES, test, 2)):
        images, labels = render_digits(count, seed)
        write_idx(directory / images_name, images)
        write_idx(directory / labels_name, labels)
    return {name: sha256_of(directory / name) for name in (*TRAIN_FILES, *TEST_FILES)}
