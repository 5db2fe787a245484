"""The promotion policy: the quality gate, then where the model came from, then production."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode

from pipeline.io import sha256_of
from pipeline.params import RegisterParams
from pipeline.registry.aliases import RegistryError, version_with_alias
from pipeline.registry.lineage import Lineage, changed_sources, current_lineage
from pipeline.registry.policy import GATE, MetricsMismatch, check_metrics_match, decide, describe

POLICY = RegisterParams(
    run_info="r.json",
    onnx_path="model.onnx",
    metrics="m.json",
    decision="d.json",
    min_test_accuracy=0.99,
    min_seed_accuracy=1.0,
    min_real_pictures_accuracy=0.9,
    min_held_out_non_digits_flagged=0.5,
)
CLEAN_MAIN = Lineage("abc123", False, "main", None, "d41d8cd9", "0f" * 32)
GOOD = {
    "test_accuracy": 0.995,
    "seed_accuracy": 1.0,
    "real_pictures_accuracy": 0.95,
    "held_out_non_digits_flagged": 0.8,
}


@pytest.mark.parametrize(
    ("test_accuracy", "seed_accuracy", "real", "non_digits", "incumbent", "action", "reason"),
    [
        (0.995, 1.0, 0.95, 0.8, None, "promote", "nothing is in production"),
        (0.985, 1.0, 0.95, 0.8, None, "none", "test_accuracy 0.9850 < 0.99"),
        (0.995, 2 / 3, 0.95, 0.8, None, "none", "seed_accuracy 0.6667 < 1.0"),
        (0.995, 1.0, 0.85, 0.8, None, "none", "real_pictures_accuracy 0.8500 < 0.9"),
        (0.995, 1.0, 0.95, 0.4, None, "none", "held_out_non_digits_flagged 0.4000 < 0.5"),
        (0.995, 1.0, 0.95, 0.8, 0.997, "none", "does not beat production's 0.9970"),
        (0.997, 1.0, 0.95, 0.8, 0.997, "none", "does not beat"),  # a tie keeps production
        (0.998, 1.0, 0.95, 0.8, 0.997, "promote", "> production's 0.9970"),
    ],
)
def test_gate_and_comparison_on_a_clean_main_repro(
    test_accuracy, seed_accuracy, real, non_digits, incumbent, action, reason
) -> None:
    metrics = {
        "test_accuracy": test_accuracy,
        "seed_accuracy": seed_accuracy,
        "real_pictures_accuracy": real,
        "held_out_non_digits_flagged": non_digits,
    }
    decision = decide(metrics, CLEAN_MAIN, incumbent, POLICY, has_incumbent=incumbent is not None)
    assert decision.action == action
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("lineage", "params", "reason"),
    [
        (Lineage("abc", True, "main", "dusty-sink", "d", "s"), POLICY, "experiment dusty-sink"),
        (Lineage("abc", True, "main", None, "d", "s"), POLICY, "uncommitted changes"),
        (Lineage("abc", False, "feature", None, "d", "s"), POLICY, "branch feature is not main"),
        (Lineage("abc", False, None, None, "d", "s"), POLICY, "branch (detached) is not main"),
        (CLEAN_MAIN, POLICY.model_copy(update={"promote": "manual"}), "promote by hand"),
    ],
)
def test_experiments_dirty_trees_and_other_branches_never_move_production(
    lineage: Lineage, params: RegisterParams, reason: str
) -> None:
    better = GOOD | {"test_accuracy": 0.999}
    decision = decide(better, lineage, 0.99, params, has_incumbent=True)
    assert decision.action == "challenger" and reason in decision.reason
    # On an empty registry the first servable version is promoted whatever its origin, so
    # that a fresh clone serves; one that fails the gate never is.
    assert decide(better, lineage, None, params, has_incumbent=False).promote
    assert not decide(better | {"seed_accuracy": 0.0}, lineage, None, params, False).promote


def test_a_missing_metric_fails_the_gate() -> None:
    decision = decide({"test_accuracy": 0.999}, CLEAN_MAIN, None, POLICY, has_incumbent=False)
    assert decision.action == "none" and "seed_accuracy is missing" in decision.reason


def test_every_gate_threshold_is_a_register_parameter() -> None:
    assert set(GATE.values()) <= set(RegisterParams.model_fields)


def test_version_description_carries_metrics_lineage_and_decision() -> None:
    metrics = {"test_accuracy": 0.9973, "test_errors": 27, "test_ece": 0.0012,
               "test_ece_uncalibrated": 0.0741, "real_pictures_accuracy": 0.912}  # fmt: skip
    lineage = Lineage("abc123", True, "main", "dusty-sink", "d41d8cd9", "0f" * 32)
    text = describe(metrics, lineage, decide(GOOD, lineage, 0.99, POLICY, has_incumbent=True))
    assert "not promoted (challenger)" in text and "experiments never move production" in text
    assert "0.9973 (27 errors)" in text and "0.0012 (0.0741)" in text and "0.912" in text
    assert "`d41d8cd9`" in text and "`abc123` (with uncommitted changes)" in text
    assert "experiment `dusty-sink`" in text


def test_metrics_of_another_model_file_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"the evaluated model")
    params = POLICY.model_copy(update={"onnx_path": model})
    digest = check_metrics_match({"onnx_sha256": sha256_of(model)}, params)
    assert digest == sha256_of(model)
    model.write_bytes(b"a model trained since")
    with pytest.raises(MetricsMismatch, match="run the evaluate stage on this model first"):
        check_metrics_match({"onnx_sha256": digest}, params)
    with pytest.raises(MetricsMismatch, match=r"\(not recorded\)"):
        check_metrics_match({}, params)


def test_dvc_outputs_do_not_make_a_tree_dirty() -> None:
    porcelain = " M dvc.lock\n M metrics/evaluate.json\nM  models/run.json\n"
    outputs = {Path("metrics/evaluate.json"), Path("models/run.json"), Path("plots/evaluate")}
    assert changed_sources(porcelain, outputs) == []
    porcelain += " M params.yaml\n M plots/evaluate/predictions.csv\nR  a.py -> pipeline/b.py\n"
    assert changed_sources(porcelain, outputs) == ["params.yaml", "pipeline/b.py"]


def test_lineage_of_a_git_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    git("add", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    clean = current_lineage("data", "sha")
    assert (clean.dirty, clean.branch, clean.experiment) == (False, "main", None)
    assert len(clean.commit) == 40
    (tmp_path / "params.yaml").write_text("a: 2\n")
    monkeypatch.setenv("DVC_EXP_NAME", "dusty-sink")
    changed = current_lineage("data", "sha")
    assert (changed.dirty, changed.experiment) == (True, "dusty-sink")
    assert changed.tags()["git_dirty"] == "true"


class FakeRegistry:
    """Answers `get_registered_model` with aliases, or raises the MLflow error it is given."""

    def __init__(self, error_code: str | None = None, aliases: dict[str, str] | None = None):
        self.error_code, self.aliases = error_code, aliases or {}

    def get_registered_model(self, name: str) -> SimpleNamespace:
        if self.error_code:
            code = ErrorCode.Value(self.error_code)
            raise MlflowException(f"{name}: something", error_code=code)
        return SimpleNamespace(aliases=self.aliases)

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        return SimpleNamespace(version=version)


def test_only_not_found_means_no_alias() -> None:
    assert version_with_alias(FakeRegistry("RESOURCE_DOES_NOT_EXIST"), "m", "production") is None
    assert version_with_alias(FakeRegistry(aliases={"previous": "1"}), "m", "production") is None
    found = version_with_alias(FakeRegistry(aliases={"production": "3"}), "m", "production")
    assert found is not None and found.version == "3"
    for code in ("INTERNAL_ERROR", "PERMISSION_DENIED", "INVALID_PARAMETER_VALUE"):
        with pytest.raises(RegistryError, match=f"{code}.*nothing was changed"):
            version_with_alias(FakeRegistry(code), "m", "production")
