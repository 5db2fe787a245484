"""A person's decision outranks the promotion policy: the version they moved `production` away
from is marked demoted, and the register stage never promotes it again."""

from __future__ import annotations

import getpass
import json
import logging
import subprocess
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mnist_core.settings import MlflowSettings
from pipeline.registry.aliases import RegistryError, promote, rollback
from pipeline.registry.commands import main as registry_cli
from pipeline.registry.demotion import Demotion, demotion_of
from pipeline.registry.history import read_history
from pipeline.registry.lineage import Lineage
from pipeline.registry.policy import decide
from pipeline.stages import register
from tests.conftest import run_pipeline
from tests.test_register import GOOD, POLICY

MODEL = "mnist-cnn"
CLEAN_MAIN = Lineage("abc123", False, "main", None, "d41d8cd9", "0f" * 32)
DEMOTED = Demotion("4", "alice", "2026-12-01T10:00:00+00:00", "rollback: misreads sevens")


def production(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(MODEL, "production").version)


def test_a_demoted_version_is_never_promoted_by_the_policy() -> None:
    better = GOOD | {"test_accuracy": 0.999}
    for incumbent, has_incumbent in ((0.99, True), (None, False)):
        decision = decide(better, CLEAN_MAIN, incumbent, POLICY, has_incumbent, demotion=DEMOTED)
        assert decision.action == "none"  # neither production nor challenger
        assert decision.reason == (
            "version 4 was demoted by alice at 2026-12-01T10:00:00+00:00 (rollback: misreads "
            "sevens): the policy never promotes it again; `mnist-registry promote 4 --reason …` "
            "clears the mark"
        )
    assert decide(better, CLEAN_MAIN, 0.99, POLICY, True).promote  # the same, not demoted


@pytest.fixture
def three_versions(registry_copy: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """The tiny registry with versions 2 and 3 of the same model added; 1 is in production."""
    for name, value in registry_copy.items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(registry_copy["MLFLOW_TRACKING_URI"])
    source = client.get_model_version(MODEL, "1").source
    mlflow.set_tracking_uri(registry_copy["MLFLOW_TRACKING_URI"])
    for _ in range(2):
        mlflow.register_model(source, MODEL)
    return client


def test_moves_by_hand_mark_the_version_left_and_clear_the_one_chosen(
    three_versions: MlflowClient,
) -> None:
    client, settings = three_versions, MlflowSettings()
    promote(client, settings, "2", "beats 1 on the canvas", by="alice")
    mark = demotion_of(client.get_model_version(MODEL, "1"))
    assert mark is not None and mark.by == "alice"
    assert mark.because == "replaced by version 2 by hand: beats 1 on the canvas"
    rollback(client, settings, "2 misreads sevens")
    assert production(client) == "1"
    assert demotion_of(client.get_model_version(MODEL, "1")) is None  # chosen again by hand
    mark = demotion_of(client.get_model_version(MODEL, "2"))
    assert mark is not None and mark.by == getpass.getuser()
    assert mark.because == "replaced by version 1 by hand: rollback: 2 misreads sevens"

    # The register stage's own promotions mark nothing, and refuse a demoted version.
    promote(client, settings, "3", "better figures", by="register stage", automatic=True)
    assert demotion_of(client.get_model_version(MODEL, "1")) is None
    with pytest.raises(RegistryError, match="version 2 was demoted by"):
        promote(client, settings, "2", "better figures", by="register stage", automatic=True)
    assert production(client) == "3"


def git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


@pytest.mark.slow
def test_a_rollback_sticks_through_the_next_register_stage(
    params_file: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's scenario with the real stages: an older and a newer version, the older
    promoted, the newer promoted, a rollback to the older, then the register stage again (the
    next `dvc repro`, from a clean tree on main): production stays where the person put it."""
    root = params_file.parent
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "params.yaml")
    git(root, "commit", "-qm", "tiny project")
    run_pipeline(params_file)
    client = MlflowClient(MlflowSettings().tracking_uri)
    assert production(client) == "1"
    # The older version made to look worse, so that on figures the policy prefers the newer.
    client.set_model_version_tag(MODEL, "1", "test_accuracy", "0.0000")
    run_pipeline(params_file, "train.seed=7")
    # Without a person's decision, the register stage promotes the newer version.
    assert production(client) == "2"

    registry_cli(["promote", "1", "--reason", "the older one first"])
    registry_cli(["promote", "2", "--reason", "then the newer one"])
    registry_cli(["rollback", "--reason", "2 misreads sevens"])
    assert production(client) == "1"
    caplog.clear()
    register.main(["--params", str(params_file)])  # the register stage of the next `dvc repro`

    assert production(client) == "1"
    newest = read_history(client, MODEL)[0]  # the rollback, and no move of the stage's after it
    assert (newest.alias, newest.from_version, newest.to_version) == ("production", "2", "1")
    assert newest.reason == "rollback: 2 misreads sevens"
    decision = json.loads((root / "metrics/register.json").read_text())
    assert decision["version"] == 2 and decision["promoted"] is False and decision["demoted"]
    assert "version 2 was demoted by" in decision["reason"]
    assert "rollback: 2 misreads sevens" in decision["reason"]
    assert "promote 2 --reason" in decision["reason"]
    newer = client.get_model_version(MODEL, "2")
    assert newer.tags["policy"] == "none" and newer.tags["policy_reason"] == decision["reason"]
    assert f"not promoted: {decision['reason']}" in newer.description
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(decision["reason"] in r.getMessage() for r in warnings), caplog.text
    capsys.readouterr()
    registry_cli(["list"])
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.split()[0] == "2"]
    assert f"by {getpass.getuser()} at" in row

    # Only a person clears the mark, by promoting the version by hand.
    registry_cli(["promote", "2", "--reason", "the sevens are fixed upstream"])
    assert demotion_of(client.get_model_version(MODEL, "2")) is None
    register.main(["--params", str(params_file)])
    assert production(client) == "2"
    decision = json.loads((root / "metrics/register.json").read_text())
    assert decision["promoted"] and not decision["demoted"]
