"""The datasets on disk: one compressed `.npz` of uint8 images and labels per MNIST split, and the
generated non-digits (`pipeline.datagen.non_digit_families`) with their families."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_core.labels import NOT_A_DIGIT_CODE
from pipeline.io import atomic_file

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


@dataclass(frozen=True)
class NonDigitSet:
    """Non-digits through the API's preprocessing: 28×28 images, each one's family, how many of
    each family the preprocessing rejected as empty (the API's 422), and which families training
    never sees."""

    images: np.ndarray
    families: np.ndarray
    rejected: dict[str, int]
    held_out: tuple[str, ...] = ()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp, tmp.open("wb") as stream:
            np.savez_compressed(
                stream,
                images=self.images,
                families=self.families,
                rejected_families=np.array(list(self.rejected), dtype=str),
                rejected_counts=np.array(list(self.rejected.values()), dtype=int),
                held_out=np.array(self.held_out, dtype=str),
            )

    @classmethod
    def load(cls, path: Path) -> NonDigitSet:
        if not path.is_file():
            raise FileNotFoundError(f"No non-digits at {path}: run `dvc repro non_digits` first.")
        with np.load(path) as data:
            names, counts = data["rejected_families"].tolist(), data["rejected_counts"].tolist()
            rejected = dict(zip(names, counts, strict=True))
            held_out = tuple(data["held_out"].tolist())
            return cls(data["images"], data["families"], rejected, held_out)


@dataclass(frozen=True)
class FeedbackSplit:
    """One side of the exported user feedback (`pipeline.data.feedback_sets`): 28×28 inputs,
    their labels (0 to 9, or `mnist_core.labels.NOT_A_DIGIT_CODE`) and each input's sha256,
    which decided its side."""

    images: np.ndarray
    labels: np.ndarray
    input_hash: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> FeedbackSplit:
        return cls(np.empty((0, 28, 28), np.uint8), np.empty(0, np.int64), np.empty(0, str))

    def digits(self) -> tuple[np.ndarray, np.ndarray]:
        chosen = self.labels != NOT_A_DIGIT_CODE
        return self.images[chosen], self.labels[chosen]

    def non_digits(self) -> np.ndarray:
        return self.images[self.labels == NOT_A_DIGIT_CODE]

    def same_as(self, other: FeedbackSplit) -> bool:
        return all(
            np.array_equal(mine, theirs)
            for mine, theirs in zip(
                (self.images, self.labels, self.input_hash),
                (other.images, other.labels, other.input_hash),
                strict=True,
            )
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp, tmp.open("wb") as stream:
            np.savez_compressed(
                stream, images=self.images, labels=self.labels, input_hash=self.input_hash
            )

    @classmethod
    def load(cls, path: Path) -> FeedbackSplit:
        """The split at `path`; empty when there is none (no feedback exported yet)."""
        if not path.is_file():
            return cls.empty()
        with np.load(path) as data:
            return cls(data["images"], data["labels"].astype(np.int64), data["input_hash"])
