"""The prediction log and `POST /feedback` through the API, on a tiny model and a SQLite store."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin
from prometheus_client import CollectorRegistry

from mnist_core.imaging import to_mnist
from monitoring.model_metrics import MonitoringMetrics
from monitoring.records import FeedbackFilter, PredictionRecord
from monitoring.settings import MonitoringSettings
from monitoring.store import Store, open_store
from monitoring.writer import PredictionLog
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, ready_client

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()


def app_client(
    env: dict[str, str], store_url: str, **settings: object
) -> AbstractContextManager[TestClient]:
    """A client of the app, once its first model load has ended (it loads in the background)."""
    return ready_client(create_app(ServingSettings(**env, MNIST_STORE_URL=store_url, **settings)))


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'predictions.db'}"


@pytest.fixture
def client(trained_registry: dict[str, str], store_url: str) -> Iterator[TestClient]:
    with app_client(trained_registry, store_url) as test_client:
        yield test_client


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def written(client: TestClient) -> None:
    """Wait until the app's prediction log has written what it was given."""
    client.app.state.service.prediction_log.wait_until_written()


def predict_seven(client: TestClient, **form: str) -> dict:
    response = client.post("/predict", files={"file": ("7.png", SEVEN, "image/png")}, data=form)
    assert response.status_code == 200, response.text
    assert response.headers["X-Prediction-Id"] == response.json()["prediction_id"]
    return response.json()


def test_every_answer_is_logged_with_its_id_and_source(client: TestClient, store: Store) -> None:
    upload = predict_seven(client)
    canvas = predict_seven(client, source="canvas")
    grey = np.zeros((28, 28), np.uint8)
    grey[4:24, 13:16] = 255
    pixels = client.post("/predict/pixels", json={"pixels": grey.tolist()})
    assert pixels.headers["X-Prediction-Id"] == pixels.json()["prediction_id"]
    batch = client.post(
        "/predict/batch",
        files=[("files", ("a.png", SEVEN, "image/png")), ("files", ("b.txt", b"no", "text/plain")),
               ("files", ("c.png", SEVEN, "image/png"))],
    ).json()  # fmt: skip
    batch_ids = [item["prediction"]["prediction_id"] for item in batch["results"][::2]]
    assert batch["results"][1]["prediction"] is None
    written(client)

    window = store.recent_predictions(10)
    expected = [upload["prediction_id"], canvas["prediction_id"], pixels.json()["prediction_id"]]
    assert sorted(window.ids.tolist()) == sorted([*expected, *batch_ids])
    sources = dict(zip(window.ids.tolist(), window.sources.tolist(), strict=True))
    assert [sources[i] for i in expected] == ["upload", "canvas", "pixels"]
    assert {sources[i] for i in batch_ids} == {"batch"}
    seven = to_mnist(Image.open(io.BytesIO(SEVEN)))
    row = window.ids.tolist().index(upload["prediction_id"])
    assert (window.pixels[row] == seven).all()
    assert window.digits[row] == upload["digit"]
    assert window.probabilities[row] == pytest.approx(upload["probabilities"], abs=1e-6)
    assert window.model_versions[row] == upload["model_version"]


def test_feedback_answers(trained_registry: dict[str, str], store_url: str,
                          store: Store) -> None:  # fmt: skip
    with app_client(trained_registry, store_url, MNIST_FEEDBACK_PER_HOUR=3) as client:
        answer = predict_seven(client)
        given = {"prediction_id": answer["prediction_id"], "label": "1"}
        response = client.post("/feedback", json=given)
        assert response.status_code == 201, response.text
        assert response.json() == {**given, "status": "pending", "predicted": answer["digit"],
                                   "model_version": answer["model_version"]}  # fmt: skip
        again = client.post("/feedback", json={**given, "label": "7"})
        assert again.status_code == 409 and "feedback already" in again.json()["detail"]
        unknown = client.post("/feedback", json={**given, "prediction_id": "0" * 32})
        assert unknown.status_code == 404 and "No logged prediction" in unknown.json()["detail"]
        for label in ("10", "seven", "", 10, -1, None):
            bad = client.post("/feedback", json={**given, "label": label})
            assert bad.status_code == 422 and bad.json()["detail"].startswith("label:"), label
        bad_id = client.post("/feedback", json={**given, "prediction_id": "../x"})
        assert bad_id.status_code == 422 and "prediction_id" in bad_id.json()["detail"]

        second, third = predict_seven(client), predict_seven(client)
        for answered, label in ((second, "not_a_digit"), (third, str(third["digit"]))):
            ok = client.post("/feedback", json={"prediction_id": answered["prediction_id"],
                                                "label": label})  # fmt: skip
            assert ok.status_code == 201, ok.text
        fourth = predict_seven(client)
        refused = client.post("/feedback", json={"prediction_id": fourth["prediction_id"],
                                                 "label": "7"})  # fmt: skip
        assert refused.status_code == 429 and "at most 3" in refused.json()["detail"]
        assert refused.headers["Retry-After"]

        written(client)
        metrics = client.get("/metrics").text
    version, digit = answer["model_version"], answer["digit"]
    rows = store.list_feedback(FeedbackFilter(status="pending"))
    assert [row.label for row in rows] == ["1", "not_a_digit", str(third["digit"])]
    assert (
        f'mnist_feedback_total{{corrected="1",model_version="{version}",predicted="{digit}"}}'
        " 1.0" in metrics
    )
    assert f'mnist_feedback_accuracy{{model_version="{version}"}} 0.333' in metrics
    assert (
        f'mnist_version_predictions_total{{digit="{digit}",model_version="{version}",'
        'source="upload"} 4.0' in metrics
    )
    assert f'mnist_prediction_confidence_count{{model_version="{version}"}} 4.0' in metrics
    assert "mnist_prediction_log_written_total 4.0" in metrics


def test_predictions_answer_when_the_store_is_down(
    trained_registry: dict[str, str], tmp_path: Path
) -> None:
    # A SQLite file in a directory that does not exist cannot be opened.
    down = f"sqlite:///{tmp_path / 'missing' / 'predictions.db'}"
    with app_client(trained_registry, down) as client:
        answers = [predict_seven(client) for _ in range(3)]
        written(client)
        feedback = client.post("/feedback", json={"prediction_id": answers[0]["prediction_id"],
                                                  "label": "7"})  # fmt: skip
        metrics = client.get("/metrics").text
    assert feedback.status_code == 503
    assert feedback.json()["detail"].startswith("Feedback cannot be stored now: the prediction")
    assert 'mnist_prediction_log_dropped_total{reason="store_error"} 3.0' in metrics
    assert not (tmp_path / "missing").exists()


def test_the_log_can_be_switched_off(trained_registry: dict[str, str], store_url: str,
                                     store: Store) -> None:  # fmt: skip
    with app_client(trained_registry, store_url, MNIST_PREDICTION_LOG=False) as client:
        answer = predict_seven(client)
        feedback = client.post("/feedback", json={"prediction_id": answer["prediction_id"],
                                                  "label": "7"})  # fmt: skip
    assert feedback.status_code == 503 and "MNIST_PREDICTION_LOG" in feedback.json()["detail"]
    assert store.count_predictions() == 0


def record(index: int) -> PredictionRecord:
    return PredictionRecord(f"{index:032x}", "1", "pixels", np.zeros((28, 28), np.uint8), 0,
                            [0.1] * 10, True)  # fmt: skip


def test_a_full_queue_drops_and_counts_without_blocking(store_url: str, store: Store) -> None:
    metrics = MonitoringMetrics(CollectorRegistry())
    log = PredictionLog(MonitoringSettings(MNIST_STORE_URL=store_url, MNIST_LOG_QUEUE_SIZE=2),
                        metrics)  # fmt: skip
    for index in range(5):  # the writer is not started: nothing leaves the queue
        log.submit(record(index))
    assert metrics.log_dropped.labels("queue_full")._value.get() == 3
    log.start()
    log.wait_until_written()
    log.stop()
    assert sorted(store.recent_predictions(10).ids.tolist()) == [f"{i:032x}" for i in range(2)]
    assert metrics.log_written._value.get() == 2


def test_sampling_logs_about_the_share_asked(store_url: str, store: Store) -> None:
    metrics = MonitoringMetrics(CollectorRegistry())
    log = PredictionLog(MonitoringSettings(MNIST_STORE_URL=store_url, MNIST_LOG_SAMPLE_RATE=0.25),
                        metrics)  # fmt: skip
    log.start()
    for index in range(400):
        log.submit(record(index))
    log.stop()
    assert 60 <= store.count_predictions() <= 140  # binomial(400, 0.25): mean 100, sd 8.7


class FileWrites:
    """Every file this process opens for writing, from Python, while `recording` is set (an
    audit hook sees the opens of every thread, temporary files unlinked at once included)."""

    hooked: FileWrites | None = None

    def __init__(self) -> None:
        self.recording = False
        self.paths: list[str] = []

    def __call__(self, event: str, args: tuple) -> None:
        if not self.recording or event not in ("open", "tempfile.mkstemp", "tempfile.mkdtemp"):
            return
        if event != "open":
            self.paths.append(str(args[0]))
            return
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(
            flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing:
            self.paths.append(str(path))

    @classmethod
    def hook(cls) -> FileWrites:
        if cls.hooked is None:  # an audit hook cannot be removed: one per session
            cls.hooked = cls()
            sys.addaudithook(cls.hooked)
        cls.hooked.paths.clear()
        return cls.hooked


def test_no_upload_is_ever_written_only_28_by_28_grey_levels(
    trained_registry: dict[str, str], tmp_path: Path, store_url: str, store: Store
) -> None:
    # A picture carrying text a user would not want kept (metadata, a large canvas): none of
    # its bytes and none of its text may reach a file; the log holds its 28×28 grey levels.
    marker = "private-note-4f1c9a"
    picture = Image.new("L", (640, 480), 255)
    picture.paste(0, (300, 100, 340, 380))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", marker * 20)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=info)
    upload = buffer.getvalue()

    writes = FileWrites.hook()
    with app_client(trained_registry, store_url) as client:
        predict_seven(client)  # the store is open and its tables exist before recording
        written(client)
        writes.recording = True
        ids = []
        for path in ("/predict", "/predict/batch"):
            field = "files" if path.endswith("batch") else "file"
            answer = client.post(path, files={field: ("secret.png", upload, "image/png")}).json()
            ids.append(answer["results"][0]["prediction"]["prediction_id"] if "results" in answer
                       else answer["prediction_id"])  # fmt: skip
        written(client)
        writes.recording = False
    assert writes.paths == []
    window = store.recent_predictions(10)
    assert set(ids) <= set(window.ids.tolist())
    expected = to_mnist(picture)
    assert all((window.pixels[window.ids.tolist().index(i)] == expected).all() for i in ids)
    with store.engine.connect() as connection:
        sizes = connection.exec_driver_sql("SELECT length(pixels) FROM predictions").all()
    assert sizes == [(784,)] * 3
    needles = (marker.encode(), upload[:64], upload[-64:], upload[1000:1064])
    for path in tmp_path.iterdir():  # the SQLite file, its write-ahead log and index
        content = path.read_bytes()
        assert not any(needle in content for needle in needles), path
