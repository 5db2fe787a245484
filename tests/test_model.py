"""The network, checkpoints and augmentation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeline.params import AugmentParams, load_params
from pipeline.training.augment import augment, random_affine_matrices, vary_stroke_width
from pipeline.training.loop import evaluate_logits, fit, use_bf16
from pipeline.training.model import (
    DigitCNN,
    cpu_flags,
    load_checkpoint,
    native_bf16,
    predict_proba,
    save_checkpoint,
)
from tests.conftest import PROJECT_ROOT
from tests.synthetic import render_digits

AUGMENT = AugmentParams(degrees=10, translate=0.1, scale=(0.9, 1.1), shear=10)
NO_AUGMENT = AugmentParams(degrees=0, translate=0, scale=(1, 1), shear=0)


@pytest.mark.parametrize(("channels", "batch"), [((32, 64, 128), 4), ((8, 16), 1), ((4,), 3)])
def test_logits_shape_follows_any_depth(channels: tuple[int, ...], batch: int) -> None:
    model = DigitCNN(channels, hidden_units=16).eval()
    assert model(torch.randn(batch, 1, 28, 28)).shape == (batch, 10)


def test_predict_proba_takes_uint8_images_and_sums_to_one() -> None:
    images, _ = render_digits(7, seed=0)
    probabilities = predict_proba(DigitCNN((8, 16)), torch.from_numpy(images), batch_size=3)
    assert probabilities.shape == (7, 10)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(7))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = DigitCNN((8, 16), hidden_units=24, dropout=0.1).eval()
    save_checkpoint(model, tmp_path / "model.pt")
    loaded = load_checkpoint(tmp_path / "model.pt")
    batch = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(batch), model(batch))
    assert not loaded.training


def test_missing_checkpoint_says_which_stage_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dvc repro train"):
        load_checkpoint(tmp_path / "model.pt")


def unit_batch(count: int = 16) -> torch.Tensor:
    images, _ = render_digits(count, seed=1)
    return torch.from_numpy(images).float().div(255).unsqueeze(1)


def test_augmented_images_stay_valid_digits() -> None:
    batch = unit_batch()
    out = augment(batch, AUGMENT, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    # A mild warp moves ink but keeps most of it in the frame.
    ratio = out.sum(dim=(1, 2, 3)) / batch.sum(dim=(1, 2, 3))
    assert ((ratio > 0.6) & (ratio < 1.5)).all()
    assert not torch.allclose(out, batch)


def test_each_image_gets_its_own_transform() -> None:
    theta = random_affine_matrices(64, AUGMENT, torch.Generator().manual_seed(0))
    assert theta.shape == (64, 2, 3)
    assert len({tuple(t.flatten().tolist()) for t in theta}) == 64


def test_augmentation_is_seeded_and_off_when_zero() -> None:
    batch = unit_batch(4)
    first = augment(batch, AUGMENT, torch.Generator().manual_seed(5))
    second = augment(batch, AUGMENT, torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, second)
    assert augment(batch, NO_AUGMENT) is batch


def test_stroke_width_thickens_and_thins() -> None:
    batch = unit_batch(8)
    ink = batch.sum(dim=(1, 2, 3))
    thick = vary_stroke_width(batch, 1.0, torch.Generator().manual_seed(0))
    changed = thick.sum(dim=(1, 2, 3)) / ink
    # Some digits gain ink (dilation), others lose it (erosion); values stay in [0, 1].
    assert (changed > 1.05).any() and (changed < 0.95).any()
    assert thick.min() >= 0 and thick.max() <= 1
    assert vary_stroke_width(batch, 0.0) is batch


def test_elastic_distortion_bends_but_keeps_the_digit() -> None:
    batch = unit_batch(8)
    params = NO_AUGMENT.model_copy(update={"elastic": 2.0})
    out = augment(batch, params, torch.Generator().manual_seed(0))
    assert not torch.allclose(out, batch, atol=0.05)
    ratio = out.sum(dim=(1, 2, 3)) / batch.sum(dim=(1, 2, 3))
    assert ((ratio > 0.7) & (ratio < 1.3)).all()


def test_identity_matrix_reproduces_the_image() -> None:
    batch = unit_batch(2)
    params = AugmentParams(degrees=0, translate=0, scale=(1, 1), shear=1e-9)
    torch.testing.assert_close(augment(batch, params), batch, atol=1e-4, rtol=0)


@pytest.mark.parametrize("ema_decay", [0.0, 0.99])
def test_fit_returns_the_weights_of_the_best_epoch(ema_decay: float) -> None:
    params = load_params(
        PROJECT_ROOT / "params.yaml",
        ["train.epochs=3", "train.batch_size=32", "train.channels=[8, 16]",
         "train.convs_per_block=1", "train.hidden_units=16", f"train.ema_decay={ema_decay}"],
    ).train  # fmt: skip
    images, labels = render_digits(200, seed=4)
    train = torch.from_numpy(images[:160]), torch.from_numpy(labels[:160]).long()
    val = torch.from_numpy(images[160:]), torch.from_numpy(labels[160:]).long()
    result = fit(params, train, val, torch.device("cpu"))
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert result.best.score == max(r.score for r in result.history)
    loss, accuracy = evaluate_logits(result.model, *val)
    assert (accuracy, -loss) == pytest.approx(result.best.score, abs=1e-5)
    if ema_decay == 0:
        assert all(r.kept == "weights" and math.isnan(r.ema_val_accuracy) for r in result.history)


def test_bf16_only_where_the_cpu_has_it_natively(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    # oneDNN emulates bf16 on plain AVX-512 (slower than fp32): that is not native.
    assert not native_bf16(cpu, frozenset({"avx512f", "avx512bw", "avx512_vnni"}))
    assert native_bf16(cpu, frozenset({"avx512f", "avx512_bf16"})) == mkldnn_available()
    assert native_bf16(cpu, frozenset({"fp", "asimd", "bf16"})) == mkldnn_available()  # Arm
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16\n\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512f", "amx_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize(("precision", "native", "expected"), [
    ("auto", True, True), ("auto", False, False), ("bf16", False, True), ("fp32", True, False),
])  # fmt: skip
def test_precision_param_forces_or_follows_the_hardware(
    precision: str, native: bool, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipeline.training.loop.native_bf16", lambda device: native)
    params = load_params(PROJECT_ROOT / "params.yaml", [f"train.precision={precision}"]).train
    assert use_bf16(params, torch.device("cpu")) is expected


def mkldnn_available() -> bool:
    return torch.backends.mkldnn.is_available()
