"""Benchmark: training time and accuracy of a parameter setting, over several seeds.

    python -m bench.train_accuracy --seeds 1 2 3 [--label fast -S train.epochs=2 ...]
    python -m bench.train_accuracy --seeds 1 --held-out shapes digit_pairs math_symbols

`--held-out` rotates which non-digit families training never sees: the non-digit sets are drawn
again with those families held out, into a temporary folder, and the run trains and scores on
them, so that a choice made for `non_digits.held_out`'s families can be checked on others.

Needs `dvc repro preprocess` first. Trains exactly as the `train` stage does (no MLflow logging),
calibrates on the validation split as it does, and reports what a choice may be made on — the
validation accuracy and the accuracy on a *validation* rendition of the generated real-looking
digits (seed 1; the evaluate stage scores seed 0) — beside the test accuracy, which is only
reported. Writes `bench/results/train_<label>.json` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.machine import machine
from mnist_core.classifier import DigitClassifier
from pipeline.data.datasets import SPLITS, NonDigitSet, load_split
from pipeline.datagen.non_digit_families import FAMILIES
from pipeline.datagen.non_digit_families import run as draw_non_digits
from pipeline.evaluation.scoring import (
    handwriting_metrics,
    non_digit_metrics,
    real_picture_metrics,
)
from pipeline.params import DEFAULT_PARAMS_FILE, Params, TrainParams, load_params
from pipeline.training import calibration
from pipeline.training.committee import fit_committee
from pipeline.training.distributed import Cluster, join, launch, leave, under_torchrun
from pipeline.training.export import export_onnx
from pipeline.training.job import calibrate
from pipeline.training.loop import load_outliers, use_bf16
from pipeline.training.model import predict_logits
from pipeline.training.placement import place
from pipeline.training.shift_averaging import shift_averaged

# The generated pictures a choice may look at; the evaluate stage's own seed (0) is held out.
VALIDATION_PICTURES_SEED = 1


def compare_scores(model, splits: dict, temperature: float) -> dict:
    """Exploration: held-out non-digits flagged at 1 % of validation digits, and AUROC, for
    several scores a model could carry."""
    import numpy as np
    from scipy.special import logsumexp, softmax
    from sklearn.metrics import roc_auc_score

    nd = splits["non_digits"]
    held = np.isin(nd.families, list(nd.held_out))
    digits = predict_logits(model, splits["val"][0]).float().numpy()
    others = predict_logits(model, torch.from_numpy(nd.images[held])).float().numpy()
    candidates = {
        "msp_calibrated": lambda z: softmax(z / temperature, axis=1).max(axis=1),
        "msp_t1": lambda z: softmax(z, axis=1).max(axis=1),
        "msp_t2": lambda z: softmax(z / 2, axis=1).max(axis=1),
        "energy_t1": lambda z: logsumexp(z, axis=1),
        "max_logit": lambda z: z.max(axis=1),
    }
    out = {}
    for name, fn in candidates.items():
        d, o = fn(digits), fn(others)
        cut = np.quantile(d, 0.01)
        auroc = roc_auc_score(np.r_[np.ones(len(d)), np.zeros(len(o))], np.r_[d, o])
        out[name] = {"held_flagged": float((o < cut).mean()), "auroc": float(auroc)}
    return out


def score(
    params: TrainParams,
    seed: int,
    device: torch.device,
    splits: dict,
    cluster: Cluster,
    keep_onnx: Path | None = None,
) -> dict | None:
    """Train one seed; return the validation-side figures and the test figures (in the main
    process of a distributed run; the others get None)."""
    params = params.model_copy(update={"seed": seed})
    started = time.perf_counter()
    outliers = load_outliers(params)
    committee = fit_committee(
        params, splits["train"], splits["val"], device, cluster=cluster, outliers=outliers
    )
    seconds = time.perf_counter() - started
    if committee is None:
        return None
    result = committee.members[0]  # the single network of the seed
    # What the train stage exports: the committee (itself when of one), with any shifts.
    servable = shift_averaged(committee.model, params.test_time_shift)
    metadata, calibrated = calibrate(servable, splits["val"], params)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.onnx"
        export_onnx(servable, path, metadata)
        if keep_onnx is not None:  # to time serving it (`MNIST_MODEL_PATH`)
            keep_onnx.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep_onnx / f"seed{seed}.onnx")
        classifier = DigitClassifier(path)
        pictures = real_picture_metrics(classifier, VALIDATION_PICTURES_SEED)
        handwriting = handwriting_metrics(classifier, VALIDATION_PICTURES_SEED)
        val_probabilities = classifier.predict_proba(splits["val"][0].numpy())
        rejection = non_digit_metrics(
            classifier, splits["non_digits"], val_probabilities.max(axis=1)
        )
        scores = compare_scores(servable, splits, metadata.temperature)
    images, labels = splits["test"]
    logits = predict_logits(servable, images).float().numpy()
    probabilities = calibration.probabilities(logits, metadata.temperature)

    def accuracy(network: torch.nn.Module, split: str) -> float:
        images, labels = splits[split]
        return float((predict_logits(network, images).argmax(dim=1) == labels).float().mean())

    members = {}
    if len(committee.members) > 1:  # each member alone: member 0 is the default recipe's net
        members = {
            "members_val_accuracy": [m.best.score[0] for m in committee.members],
            "members_test_accuracy": [accuracy(m.model, "test") for m in committee.members],
        }
    return {
        "seed": seed,
        "held_out": list(splits["non_digits"].held_out),
        "val_accuracy": result.best.score[0],
        # The exported graph's (with its test-time shifts, if any), from the ONNX file.
        "val_accuracy_served": float(
            (val_probabilities.argmax(axis=1) == splits["val"][1].numpy()).mean()
        ),
        "best_epoch": result.best.epoch,
        "kept": result.best.kept,
        "val_real_pictures_accuracy": pictures["real_pictures_accuracy"],
        "val_real_pictures_by_style": pictures["real_pictures_by_style"],
        "val_handwriting_accuracy": handwriting["handwriting_accuracy"],
        "val_handwriting_by_kind": handwriting["handwriting_by_kind"],
        "val_non_digits_flagged": rejection["non_digits_flagged"],
        "val_held_out_flagged": rejection["held_out_non_digits_flagged"],
        "val_seen_flagged": rejection["non_digits"]["seen"]["flagged"],
        "val_held_out_auroc": rejection["non_digits"]["held_out"]["auroc"],
        "val_non_digits": rejection["non_digits"],
        "val_real_pictures_flagged": pictures["real_pictures_flagged"],
        "val_scores": scores,
        "temperature": metadata.temperature,
        "val_ece": calibrated["val_ece"],
        "val_ece_uncalibrated": calibrated["val_ece_uncalibrated"],
        "test_accuracy": float((probabilities.argmax(axis=1) == labels.numpy()).mean()),
        "test_ece": calibration.expected_calibration_error(probabilities, labels.numpy()),
        "train_seconds": seconds,
        "seconds_per_epoch": statistics.median(r.seconds for r in committee.history),
        **members,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("-S", dest="overrides", action="append", default=[])
    parser.add_argument("--label", default="default", help="names the results file")
    parser.add_argument("--keep-onnx", type=Path, help="a folder to keep each seed's ONNX file in")
    parser.add_argument(
        "--held-out",
        nargs="+",
        choices=sorted(FAMILIES),
        help="non-digit families to hold out instead of params.yaml's (drawn again, temporarily)",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()

    with tempfile.TemporaryDirectory(prefix="non-digits-") as scratch:
        params = load_params(DEFAULT_PARAMS_FILE, args.overrides)
        if args.held_out:  # drawn once, here; the training processes get the overrides
            args.overrides += held_out_instead(params, args.held_out, Path(scratch))
            args.held_out = None
            params = load_params(DEFAULT_PARAMS_FILE, args.overrides)
        base = params.train
        placement = place(base.processes, base.batch_size)
        if placement.processes > 1 and not under_torchrun():  # as the train stage does
            launch(placement, "bench.train_accuracy", as_argv(args))
            return
        cluster, device = join()
        try:
            rows = run_seeds(params, args.seeds, device, cluster, args.keep_onnx)
        finally:
            leave()
        if cluster.is_main:
            report(args, base, device, cluster, rows)


def held_out_instead(params: Params, families: list[str], directory: Path) -> list[str]:
    """Draw the non-digit sets again into `directory` with `families` never trained on; return
    the overrides that point training and scoring at them."""
    draw_non_digits(
        params.non_digits.model_copy(
            update={"held_out": families, "out_dir": directory, "metrics": directory / "drawn.json"}
        )
    )
    return [f"non_digits.out_dir={directory}", f"train.non_digits={directory / 'train.npz'}"]


def as_argv(args: argparse.Namespace) -> list[str]:
    """The command line of `args`, for the training processes `launch` starts."""
    argv = ["--seeds", *map(str, args.seeds), "--label", args.label]
    argv += [part for override in args.overrides for part in ("-S", override)]
    if args.keep_onnx is not None:
        argv += ["--keep-onnx", str(args.keep_onnx)]
    if args.held_out:
        argv += ["--held-out", *args.held_out]
    return argv


def run_seeds(
    params: Params,
    seeds: list[int],
    device: torch.device,
    cluster: Cluster,
    keep_onnx: Path | None = None,
) -> list:
    splits: dict = {name: load_split(params.train.data_dir, name) for name in SPLITS}
    # The validation rendition of every non-digit family: what choices may look at.
    splits["non_digits"] = NonDigitSet.load(params.non_digits.out_dir / "val.npz")
    rows = []
    for seed in seeds:
        row = score(params.train, seed, device, splits, cluster, keep_onnx)
        if row is not None:
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def report(
    args: argparse.Namespace, base: TrainParams, device: torch.device, cluster: Cluster, rows: list
) -> None:
    """Write `bench/results/train_<label>.json` and print the Markdown table."""

    def median(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    keys = ("val_accuracy", "val_accuracy_served", "val_real_pictures_accuracy",
            "val_handwriting_accuracy", "val_non_digits_flagged", "val_held_out_flagged",
            "val_seen_flagged", "val_held_out_auroc", "val_real_pictures_flagged",
            "test_accuracy", "test_ece", "train_seconds", "seconds_per_epoch")  # fmt: skip
    summary = {
        "label": args.label,
        "preset": base.preset,
        "committee": base.committee,
        **machine(device, use_bf16(base, device)),
        "processes": cluster.world_size,
        "requested_processes": base.processes,
        "held_out": rows[0]["held_out"] if rows else [],
        "overrides": args.overrides,
        **{f"median_{key}": median(key) for key in keys},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "runs": rows,
    }
    out = Path(f"bench/results/train_{args.label}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        "\n| seed | val accuracy (member 0) | val accuracy served | val real pictures "
        "| val held-out non-digits flagged | test accuracy | test ECE | train s | s/epoch |"
        "\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['seed']} | {r['val_accuracy']:.4f} | {r['val_accuracy_served']:.4f} "
            f"| {r['val_real_pictures_accuracy']:.3f} | "
            f"{r['val_held_out_flagged']:.3f} | {r['test_accuracy']:.4f} | {r['test_ece']:.4f} "
            f"| {r['train_seconds']:.0f} | {r['seconds_per_epoch']:.1f} |"
        )
    print(
        f"| **median** | **{summary['median_val_accuracy']:.4f}** | "
        f"**{summary['median_val_accuracy_served']:.4f}** | "
        f"**{summary['median_val_real_pictures_accuracy']:.3f}** | "
        f"**{summary['median_val_held_out_flagged']:.3f}** | "
        f"**{summary['median_test_accuracy']:.4f}** | {summary['median_test_ece']:.4f} | "
        f"**{summary['median_train_seconds']:.0f}** | {summary['median_seconds_per_epoch']:.1f} |"
    )


if __name__ == "__main__":
    main()
