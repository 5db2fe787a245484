"""Non-digits: the generated families, the outlier-exposure loss, and the rejection figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_core.imaging import IMAGE_SIZE
from pipeline.data.datasets import NonDigitSet
from pipeline.datagen.non_digit_families import FAMILIES, GLYPHS, generate
from pipeline.evaluation.rejection import rejection_metrics
from pipeline.training.distributed import pick_device
from pipeline.training.loop import outlier_exposure_loss

DIGITS = np.random.default_rng(0).integers(0, 256, (20, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_draws_mnist_style_pictures(family: str) -> None:
    drawn = generate([family], 6, seed=3, digits=DIGITS)
    assert len(drawn.images) + sum(drawn.rejected.values()) == 6
    assert len(drawn.images) >= 4, f"{family}: most pictures should survive preprocessing"
    assert drawn.images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE) and drawn.images.dtype == np.uint8
    assert (drawn.families == family).all()
    # Through the API's preprocessing: ink fits the 20×20 box, so the border stays black.
    assert drawn.images[:, :2, :].max() == 0 and drawn.images[:, :, :2].max() == 0
    # Not one picture over and over.
    assert len({image.tobytes() for image in drawn.images}) == len(drawn.images)


def test_a_seed_draws_the_same_set_and_another_seed_another() -> None:
    families = ["latin_letters", "doodles", "digit_cuts"]
    first, again = (generate(families, 4, seed=1, digits=DIGITS) for _ in range(2))
    other = generate(families, 4, seed=2, digits=DIGITS)
    assert np.array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)


def test_glyph_families_hold_no_digit_lookalikes() -> None:
    # Shapes that are digits (a ring, a bar, an S, a Z, a b) are left out on purpose.
    lookalikes = set("0123456789OoIl|SsZzBbGgqQDθΘοΟбЗ")
    for family, characters in GLYPHS.items():
        assert not lookalikes & set(characters), family


def test_unknown_family_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Unknown non-digit families"):
        generate(["emoji"], 1, seed=0, digits=DIGITS)


def test_a_set_saves_and_loads_whole(tmp_path: Path) -> None:
    drawn = generate(["shapes", "noise"], 3, seed=0, digits=DIGITS, held_out=["noise"])
    drawn = NonDigitSet(drawn.images, drawn.families, {"noise": 2}, drawn.held_out)
    drawn.save(tmp_path / "set.npz")
    loaded = NonDigitSet.load(tmp_path / "set.npz")
    assert np.array_equal(loaded.images, drawn.images)
    assert loaded.families.tolist() == drawn.families.tolist()
    assert loaded.rejected == {"noise": 2} and loaded.held_out == ("noise",)


def test_missing_set_says_which_stage_makes_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dvc repro non_digits"):
        NonDigitSet.load(tmp_path / "absent.npz")


def test_outlier_exposure_loss_is_zero_only_for_uniform_answers() -> None:
    uniform = torch.zeros(4, 10)
    assert outlier_exposure_loss(uniform).item() == pytest.approx(0.0, abs=1e-6)
    confident = torch.zeros(4, 10)
    confident[:, 3] = 10.0
    assert outlier_exposure_loss(confident).item() > 5
    # It is the cross-entropy against the uniform target, less its floor log(10).
    logits = torch.randn(8, 10)
    expected = -(logits.log_softmax(dim=1).mean(dim=1)).mean() - math.log(10)
    assert outlier_exposure_loss(logits).item() == pytest.approx(expected.item(), rel=1e-5)


def rejection_set(families: list[str], held_out: tuple[str, ...]) -> NonDigitSet:
    images = np.zeros((len(families), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return NonDigitSet(images, np.array(families), {"blank": 1}, held_out)


def test_rejection_figures_per_family_and_for_unseen_families() -> None:
    digits = np.linspace(0.90, 1.0, 100)  # digits' top-class probabilities
    families = ["letters"] * 4 + ["doodles"] * 4
    # Letters score low (all flagged); doodles score like digits (two of four flagged).
    confidence = np.array([0.2, 0.3, 0.25, 0.1, 0.999, 0.995, 0.5, 0.6])
    figures = rejection_metrics(digits, rejection_set(families, ("doodles",)), confidence, 0.905)
    letters, doodles = figures["by_family"]["letters"], figures["by_family"]["doodles"]
    assert letters["flagged"] == 1.0 and letters["auroc"] == 1.0
    assert letters["accepted_at_95"] == 0.0 and letters["accepted_at_99"] == 0.0
    assert doodles["flagged"] == 0.5 and 0.5 < doodles["auroc"] < 1.0
    assert doodles["accepted_at_95"] == 0.5 and doodles["accepted_at_99"] == 0.5
    assert figures["held_out"] == doodles and figures["seen"]["count"] == 4 + 1
    # The picture rejected as empty (the API's 422) counts as flagged.
    blank = figures["by_family"]["blank"]
    assert blank == {"count": 1, "flagged": 1, "auroc": 1, "accepted_at_95": 0, "accepted_at_99": 0}
    assert figures["all"]["flagged"] == pytest.approx((4 + 2 + 1) / 9)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_device_order_is_cuda_then_apple_gpu_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device().type == expected
