"""IDX parsing and the train/validation split."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.datasets import load_split
from pipeline.data.splits import IdxFormatError, preprocess, read_idx_pair, split_train_val
from pipeline.params import PreprocessParams
from tests.synthetic import render_digits, write_idx


def test_idx_round_trip(tmp_path: Path) -> None:
    images, labels = render_digits(25, seed=0)
    write_idx(tmp_path / "images", images)
    write_idx(tmp_path / "labels", labels)
    read_images, read_labels = read_idx_pair(tmp_path / "images", tmp_path / "labels")
    assert read_images.shape == (25, 28, 28) and read_images.dtype == np.uint8
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)


@pytest.mark.parametrize(
    "content",
    [b"not an idx file at all", struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 5, 28, 28)],
    ids=["garbage", "truncated"],
)
def test_malformed_idx_is_rejected(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "images").write_bytes(content)
    write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(IdxFormatError):
        read_idx_pair(tmp_path / "images", tmp_path / "labels")


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    images, labels = render_digits(10, seed=0)
    write_idx(tmp_path / "images", images)
    write_idx(tmp_path / "labels", labels[:9])
    with pytest.raises(IdxFormatError, match="10 images but"):
        read_idx_pair(tmp_path / "images", tmp_path / "labels")


def test_split_is_deterministic_stratified_and_disjoint() -> None:
    images = np.arange(1000, dtype=np.int64).reshape(1000, 1, 1)  # each image is its own id
    labels = np.repeat(np.arange(10), 100)
    first = split_train_val(images, labels, val_size=100, seed=3)
    second = split_train_val(images, labels, val_size=100, seed=3)
    other = split_train_val(images, labels, val_size=100, seed=4)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[2], other[2])
    train_x, _, val_x, val_y = first
    assert np.bincount(val_y).tolist() == [10] * 10  # stratified
    assert set(train_x.ravel()).isdisjoint(val_x.ravel())
    assert len(train_x) + len(val_x) == 1000


def test_test_set_is_kept_apart(tmp_path: Path, raw_mnist) -> None:
    raw_dir, _ = raw_mnist
    params = PreprocessParams(
        raw_dir=raw_dir,
        out_dir=tmp_path / "processed",
        val_size=50,
        seed=0,
        metrics=tmp_path / "data.json",
    )
    counts = preprocess(params)
    raw_train, _ = read_idx_pair(
        raw_dir / "train-images-idx3-ubyte", raw_dir / "train-labels-idx1-ubyte"
    )
    raw_test, raw_test_labels = read_idx_pair(
        raw_dir / "t10k-images-idx3-ubyte", raw_dir / "t10k-labels-idx1-ubyte"
    )
    test_x, test_y = load_split(params.out_dir, "test")
    np.testing.assert_array_equal(test_x.numpy(), raw_test)  # untouched, in order
    np.testing.assert_array_equal(test_y.numpy(), raw_test_labels)
    train_x, _ = load_split(params.out_dir, "train")
    val_x, _ = load_split(params.out_dir, "val")
    assert len(train_x) + len(val_x) == len(raw_train) and len(val_x) == 50
    # Every train/val image comes from the training file: none from the test file.
    train_rows = {row.tobytes() for row in raw_train}
    assert all(row.tobytes() in train_rows for row in np.concatenate([train_x, val_x]))
    assert sum(counts["val"].values()) == 50
    assert (params.out_dir / "manifest.json").is_file()
