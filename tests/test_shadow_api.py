"""The API with a `challenger` in a real (tiny) registry: it scores live requests in the shadow,
`/metrics` shows the agreement, the log keeps both answers, `mnist-registry compare` prints them,
and the shadow follows the alias as it moves, goes away or names production's version."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from pipeline.registry.commands import main as registry_cli
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, ready_client, with_more_versions

MODEL = "mnist-cnn"
SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.05)


def samples(text: str, name: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def shadowing_settings(registry_copy: dict[str, str], tmp_path: Path) -> ServingSettings:
    """The API on the tiny registry, its log in `tmp_path`, quick to see the alias move, every
    answer compared (so the counts are exact)."""
    return ServingSettings(
        **registry_copy,
        MNIST_STORE_URL=f"sqlite:///{tmp_path / 'predictions.db'}",
        MNIST_POLL_SECONDS=0.2,
        MNIST_SHADOW_SAMPLE_RATE=1,
    )


@pytest.fixture
def registry(registry_copy: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """The tiny registry (version 1 in production) with versions 2 and 3 of the same model,
    version 2 the challenger."""
    client = with_more_versions(registry_copy, monkeypatch, count=2)
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return client


def test_the_challenger_is_scored_in_the_shadow_and_follows_its_alias(
    registry: MlflowClient,
    registry_copy: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = shadowing_settings(registry_copy, tmp_path)
    app = create_app(settings)
    service = app.state.service

    def shadowing() -> str | None:
        return None if service.shadow.current is None else service.shadow.current.version

    def predict(times: int) -> list[str]:
        ids = []
        for _ in range(times):
            answer = client.post("/predict", files={"file": ("7.png", SEVEN, "image/png")})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == "1"
            ids.append(answer.json()["prediction_id"])
        service.shadow.wait_until_scored()
        return ids

    def agreed() -> float:
        text = client.get("/metrics").text
        return samples(text, "mnist_shadow_comparisons_total")[(("outcome", "agree"),)]

    with ready_client(app) as client:
        wait_for(lambda: shadowing() == "2", "the challenger's load")
        ids = predict(4)
        text = client.get("/metrics").text
        # The same model file on both sides: every answer agrees.
        assert samples(text, "mnist_shadow_comparisons_total") == {
            (("outcome", "agree"),): 4.0, (("outcome", "disagree"),): 0.0,
        }  # fmt: skip
        shadow_version = samples(text, "mnist_shadow_version")
        assert shadow_version == {(("alias", "challenger"), ("name", MODEL)): 2.0}
        service.prediction_log.wait_until_written()
        store = service.prediction_log.store()
        with store.engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT prediction_id, challenger_version, digit FROM shadow_answers"
            ).all()
            logged = connection.exec_driver_sql("SELECT id, digit FROM predictions").all()
        assert sorted(row[0] for row in rows) == sorted(ids)
        assert {row[1] for row in rows} == {"2"}
        assert sorted((i, d) for i, _, d in rows) == sorted(logged)  # beside production's

        # The alias moves to version 3: the shadow follows.
        registry.set_registered_model_alias(MODEL, "challenger", "3")
        wait_for(lambda: shadowing() == "3", "the shadow following the alias")
        predict(2)
        assert agreed() == 6
        # Production's own version as the challenger: nothing to compare.
        registry.set_registered_model_alias(MODEL, "challenger", "1")
        wait_for(lambda: shadowing() == "1", "the shadow loading version 1")
        predict(2)
        assert agreed() == 6
        # The alias goes away: so does the shadow.
        registry.delete_registered_model_alias(MODEL, "challenger")
        wait_for(lambda: shadowing() is None, "the shadow unloading")
        predict(2)
        assert agreed() == 6
        no_challenger = {(("alias", "challenger"), ("name", MODEL)): 0.0}
        assert samples(client.get("/metrics").text, "mnist_shadow_version") == no_challenger
        assert client.get("/ready").json()["model_version"] == "1"

    registry.set_registered_model_alias(MODEL, "challenger", "2")
    registry_cli(["compare", "--store", settings.store_url])
    text = capsys.readouterr().out
    assert "production version 1 against challenger version 2" in text
    assert "4 answers compared" in text and "agreement             100.0 %" in text


def test_a_challenger_that_cannot_be_loaded_leaves_production_alone(
    registry_copy: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = with_more_versions(registry_copy, monkeypatch, count=0)
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("flavors: {}\n")  # no ONNX flavor
    version = client.create_model_version(MODEL, broken.as_uri()).version
    client.set_registered_model_alias(MODEL, "challenger", version)
    settings = shadowing_settings(registry_copy, tmp_path)
    app = create_app(settings)
    challenger = app.state.service.shadow.challenger
    with ready_client(app) as client:
        wait_for(lambda: challenger.checked.is_set(), "the challenger's first load")
        assert challenger.current is None and "could not be loaded" in challenger.problem
        answer = client.post("/predict", files={"file": ("7.png", SEVEN, "image/png")})
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        assert client.get("/ready").json() == {
            "ready": True, "model_version": "1", "reason": None,
        }  # fmt: skip
        text = client.get("/metrics").text
        assert samples(text, "mnist_shadow_comparisons_total")[(("outcome", "agree"),)] == 0


def test_compare_refuses_a_log_that_is_not_there(
    registry: MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such" / "predictions.db"
    with pytest.raises(SystemExit) as stopped:
        registry_cli(["compare", "--store", f"sqlite:///{missing}"])
    assert str(stopped.value) == (
        f"error: there is no prediction log at {missing}: the API writes it where "
        "MNIST_STORE_URL says; give that URL (or --store)"
    )
    assert not missing.parent.exists()  # nothing created on the way
    unreachable = "postgresql+psycopg://nobody:secret@127.0.0.1:9/predictions"
    with pytest.raises(SystemExit) as stopped:
        registry_cli(["compare", "--store", unreachable])
    message = str(stopped.value)
    assert message.startswith("error: the prediction log at postgresql+psycopg://nobody:***@")
    assert "cannot be read" in message and "secret" not in message
