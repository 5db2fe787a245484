"""The one loader for `params.yaml`: typed sections validated once, with `-S` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

DEFAULT_PARAMS_FILE = Path("params.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DownloadParams(_Section):
    local_dir: Path | None = None
    mirrors: list[str] = Field(default_factory=list)
    npm_package: str | None = None
    timeout_seconds: float = 30.0
    files: dict[str, str]
    out_dir: Path


class PreprocessParams(_Section):
    raw_dir: Path
    out_dir: Path
    val_size: int = Field(gt=0)
    seed: int
    metrics: Path


class NonDigitSeeds(_Section):
    train: int
    val: int
    test: int


class NonDigitParams(_Section):
    data_dir: Path  # the MNIST splits: digit-made non-digits take each split's own digits
    out_dir: Path  # train.npz (training families), val.npz and test.npz (every family)
    metrics: Path
    # Families never trained on: choices are made, and the gate checks, on these.
    held_out: list[str]
    train_per_family: int = Field(gt=0)
    eval_per_family: int = Field(gt=0)
    seeds: NonDigitSeeds


class FeedbackParams(_Section):
    """The export of accepted user feedback (`pipeline.data.feedback_sets`)."""

    out_dir: Path  # train.npz and held_out.npz
    metrics: Path  # how many digits and non-digits on each side
    # About this share of the distinct inputs is held out, chosen by each input's sha256.
    held_out_share: float = Field(gt=0, lt=1)


class AugmentParams(_Section):
    degrees: float = Field(ge=0)
    translate: float = Field(ge=0, le=0.5)
    scale: tuple[float, float]
    shear: float = Field(ge=0)
    # Up to this fraction of a 3×3 dilation (thicker) or erosion (thinner) per digit; 0: off.
    stroke_width: float = Field(default=0.0, ge=0, le=1)
    # This share of the images is drawn hollow (each stroke replaced by its outline); 0: off.
    outline: float = Field(default=0.0, ge=0, le=1)
    # Elastic distortion: smooth random displacements of up to about this many pixels; 0: off.
    elastic: float = Field(default=0.0, ge=0, le=4)


# `train.preset`: the settings each preset gives where params.yaml (or -S) does not set them.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "best": {"committee": 3},
}


class TrainParams(_Section):
    data_dir: Path
    model_path: Path  # the PyTorch weights (state dict), for fine-tuning
    onnx_path: Path  # the self-contained ONNX model that is registered, evaluated and served
    checkpoint_path: Path  # the training state after each epoch (not a DVC output)
    run_info: Path
    metrics: Path
    history: Path
    seed: int
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    max_lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    label_smoothing: float = Field(ge=0, lt=1)
    # Validate and keep an exponential moving average of the weights; 0 keeps the raw weights.
    ema_decay: float = Field(default=0.0, ge=0, lt=1)
    dropout: float = Field(ge=0, lt=1)
    channels: list[int]
    # (conv → BN → ReLU) layers per block: one count for all blocks, or one per block.
    convs_per_block: PositiveInt | list[PositiveInt] = 1
    hidden_units: int = Field(gt=0)
    # `auto`: bfloat16 autocast where the hardware does it natively (it doubles CPU throughput
    # on AVX-512-BF16 machines), float32 elsewhere.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # Outlier Exposure: each step also trains on `outlier_ratio` × batch_size generated
    # non-digits, pulled towards the uniform distribution with this weight; 0 turns it off.
    non_digits: Path  # the training families' pictures (`pipeline.datagen.non_digit_families`)
    outlier_weight: float = Field(default=0.0, ge=0)
    outlier_ratio: float = Field(default=0.0, ge=0)
    # User feedback (`pipeline.data.feedback_sets`): its digits join the training split, each
    # repeated `feedback_weight` times (0: left out); its non-digits join the Outlier Exposure set.
    feedback: Path | None = None
    feedback_weight: int = Field(default=1, ge=0)
    # Continue an interrupted run of the same configuration from its last epoch.
    resume: bool = True
    # Data-parallel training processes on this machine (DDP under torchrun); 1: one process;
    # `auto`: one per GPU, two on a CPU (`pipeline.training.placement`).
    processes: PositiveInt | Literal["auto"] = "auto"
    # Test-time augmentation in the exported graph: logits averaged over the image shifted by up
    # to this many pixels each way ((2r+1)² views; `pipeline.training.shift_averaging`); 0: off.
    test_time_shift: int = Field(default=0, ge=0, le=2)
    # The `uncertain` threshold is set so that this share of validation digits falls below it.
    uncertain_digit_share: float = Field(default=0.01, ge=0, lt=1)
    # Networks trained from different seeds and served as one, their log-probabilities averaged
    # in the exported graph (`pipeline.training.committee`); 1: the single network.
    committee: PositiveInt = 1
    # A named bundle of the settings above: `best` trades training time (and serving CPU) for
    # accuracy (`PRESETS`); a setting given beside it wins, one left null comes from it.
    preset: Literal["default", "best"] = "default"
    augment: AugmentParams

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset_keys = {key for settings in PRESETS.values() for key in settings}
        given = {k: v for k, v in data.items() if v is not None or k not in preset_keys}
        return {**PRESETS.get(data.get("preset", "default"), {}), **given}


class EvaluateParams(_Section):
    data_dir: Path
    onnx_path: Path
    run_info: Path
    seed_images_dir: Path
    metrics: Path
    predictions: Path
    figures_dir: Path
    history: Path
    batch_size: int = Field(gt=0)
    # Seed of the generated real-looking digits (`pipeline.datagen.digit_pictures`).
    pictures_seed: int = 0
    # The test rendition of every non-digit family (`pipeline.datagen.non_digit_families`).
    non_digits: Path
    feedback: Path | None = None  # the held-out user feedback (`pipeline.data.feedback_sets`)


class RegisterParams(_Section):
    run_info: Path
    onnx_path: Path  # logged again from here when the tracking store has lost the run
    metrics: Path
    decision: Path
    min_test_accuracy: float = Field(ge=0, le=1)
    min_seed_accuracy: float = Field(ge=0, le=1)
    # The generated real-looking digits (fonts, mouse drawings) of the evaluate stage.
    min_real_pictures_accuracy: float = Field(default=0.0, ge=0, le=1)
    # Non-digits of the families training never saw, flagged `uncertain` (or rejected as empty).
    min_held_out_non_digits_flagged: float = Field(default=0.0, ge=0, le=1)
    # With at least this many held-out feedback rows, a version worse on them than production
    # fails the gate.
    min_feedback_rows: int = Field(default=20, ge=1)
    # The promotion policy (pipeline/register.py): `auto` lets a clean `dvc repro` on `branch`
    # move `production`; `manual` leaves every move to `mnist-registry promote`.
    promote: Literal["auto", "manual"] = "auto"
    branch: str = "main"


class DriftParams(_Section):
    """The drift check (`python -m pipeline.stages.drift`), run on demand: see `pipeline.drift`."""

    data_dir: Path  # the validation split is the default reference; the test split, unshifted
    onnx_path: Path  # scores the validation split as the API would (the served version's file)
    report: Path  # HTML with the plots
    metrics: Path  # the JSON summary, a DVC metrics file
    window_size: int = Field(gt=0)  # the newest logged predictions compared
    min_window_size: int = Field(gt=0)  # fewer logged predictions: no verdict, exit 0
    model_version: str | None = None  # only this version's predictions; None: all
    # `validation`: the validation split through the served model; `traffic`: the
    # `window_size` predictions logged before the window.
    reference: Literal["validation", "traffic"] = "validation"
    alpha: float = Field(gt=0, lt=1)  # family-wise false-alarm rate, Bonferroni-corrected
    false_alarm_windows: int = Field(ge=0)  # unshifted windows the false-alarm rate is measured on
    seed: int = 0


class Params(_Section):
    download: DownloadParams
    preprocess: PreprocessParams
    non_digits: NonDigitParams
    feedback: FeedbackParams
    train: TrainParams
    evaluate: EvaluateParams
    # `register` would shadow a BaseModel attribute, so the field takes another name.
    registration: RegisterParams = Field(validation_alias="register")
    drift: DriftParams


def _apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (so `3`, `0.1`, `[1, 2]`)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ValueError(f"Override {assignment!r} must look like section.key=value")
    *parents, leaf = key.split(".")
    node = tree
    for name in parents:
        if not isinstance(node.get(name), dict):
            raise KeyError(f"Override {assignment!r}: {name!r} is not a section of params.yaml")
        node = node[name]
    if leaf not in node:
        raise KeyError(f"Override {assignment!r}: no parameter {key!r} in params.yaml")
    node[leaf] = yaml.safe_load(raw)


def load_params(path: Path = DEFAULT_PARAMS_FILE, overrides: list[str] | None = None) -> Params:
    """Read and validate `params.yaml`, applying `section.key=value` overrides first."""
    if not path.is_file():
        raise FileNotFoundError(f"No parameters file at {path}; run from the project root.")
    tree = yaml.safe_load(path.read_text()) or {}
    for assignment in overrides or []:
        _apply_override(tree, assignment)
    return Params.model_validate(tree)
