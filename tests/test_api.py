"""The API against a real tiny model in a temporary MLflow registry."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from PIL import Image, ImageDraw

from mnist_core.classifier import DigitClassifier
from mnist_core.imaging import to_mnist
from pipeline.registry.aliases import promote, rollback
from serving.api import uncertain_reason
from serving.app import create_app
from serving.limits import human_size
from serving.model_store import read_onnx_model
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, ready_client
from tests.synthetic import render_digits

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()


def settings_for(env: dict[str, str], **overrides: object) -> ServingSettings:
    return ServingSettings(**env, **overrides)


@pytest.fixture
def client(trained_registry: dict[str, str]) -> TestClient:
    with ready_client(create_app(settings_for(trained_registry))) as test_client:
        yield test_client


def image_bytes(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def served_version(client: TestClient) -> str:
    return client.get("/model").json()["version"]


def test_health_ready_and_model(client: TestClient, trained_registry: dict[str, str]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    info = client.get("/model").json()
    registry = MlflowClient(trained_registry["MLFLOW_TRACKING_URI"])
    production = registry.get_model_version_by_alias("mnist-cnn", "production")
    assert (info["name"], info["alias"]) == ("mnist-cnn", "production")
    assert (info["version"], info["run_id"]) == (str(production.version), production.run_id)


def test_predict_answers_with_the_served_version(
    client: TestClient, trained_registry: dict[str, str]
) -> None:
    response = client.post("/predict", files={"file": ("num_7.png", SEVEN, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    # Exactly what the production version's own file says about the preprocessed picture.
    uri = trained_registry["MLFLOW_TRACKING_URI"]
    production = MlflowClient(uri).get_model_version_by_alias("mnist-cnn", "production")
    classifier = DigitClassifier(read_onnx_model("mnist-cnn", production.version, uri))
    expected = classifier.predict_proba(to_mnist(Image.open(io.BytesIO(SEVEN)))[np.newaxis])[0]
    assert body["model_version"] == served_version(client) == str(production.version)
    assert body["digit"] == int(expected.argmax())
    np.testing.assert_allclose(body["probabilities"], expected, atol=1e-6)
    assert body["confidence"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert body["uncertain"] is bool(expected.max() < classifier.metadata.uncertain_below)


def drawn_one() -> Image.Image:
    image = Image.new("RGB", (120, 160), "white")
    ImageDraw.Draw(image).line([(60, 20), (60, 140)], fill="black", width=12)
    return image


@pytest.mark.parametrize(
    ("fmt", "save"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 90}),
        ("BMP", {}),
        ("WEBP", {}),
        ("GIF", {"save_all": True, "append_images": [Image.new("RGB", (120, 160), "white")]}),
    ],
)
def test_every_accepted_format(client: TestClient, fmt: str, save: dict) -> None:
    """The same drawing in any accepted format gets the answer its PNG gets."""
    reference = client.post("/predict", files={"file": ("x.png", image_bytes(drawn_one(), "PNG"))})
    data = image_bytes(drawn_one(), fmt, **save)
    response = client.post("/predict", files={"file": (f"x.{fmt.lower()}", data)})
    assert response.status_code == 200, response.text
    assert response.json()["digit"] == reference.json()["digit"]
    differences = np.subtract(response.json()["probabilities"], reference.json()["probabilities"])
    assert np.abs(differences).max() < 0.05  # lossy JPEG and WebP move them a little


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("not_an_image.txt", (SEED_IMAGES / "not_an_image.txt").read_bytes()),
        ("doc.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF"),
        ("digit.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>'),
        ("digit.tiff", image_bytes(drawn_one(), "TIFF")),
    ],
)
def test_files_that_are_not_accepted_images_get_415(
    client: TestClient, name: str, data: bytes
) -> None:
    response = client.post("/predict", files={"file": (name, data)})
    assert response.status_code == 415
    assert "not an image" in response.json()["detail"]


def test_no_file_is_a_clear_422(client: TestClient) -> None:
    response = client.post("/predict")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("No file was uploaded")


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (image_bytes(Image.new("RGB", (300, 200), "white"), "PNG"), "blank"),
        (SEVEN[: len(SEVEN) // 2], "corrupt or truncated"),
        (b"", "empty"),
    ],
    ids=["blank", "truncated", "empty"],
)
def test_unusable_images_get_422(client: TestClient, data: bytes, phrase: str) -> None:
    response = client.post("/predict", files={"file": ("x.png", data, "image/png")})
    assert response.status_code == 422
    assert phrase in response.json()["detail"]


def test_pixel_limit_is_checked_from_the_header(trained_registry: dict[str, str]) -> None:
    app = create_app(settings_for(trained_registry, MNIST_MAX_IMAGE_PIXELS=100_000))
    with ready_client(app) as small:
        response = small.post("/predict", files={"file": ("big.png", png_bomb(1000, 1000))})
        assert response.status_code == 413
        assert "1000×1000 pixels" in response.json()["detail"]


def test_upload_over_the_byte_limit_gets_413(trained_registry: dict[str, str]) -> None:
    app = create_app(settings_for(trained_registry, MNIST_MAX_UPLOAD_BYTES=4096))
    with ready_client(app) as small:
        # One byte over the limit: inside the body's room for multipart headers, so the
        # endpoint's own check answers.
        over = b"\0" * 4097
        response = small.post("/predict", files={"file": ("big.png", over)})
        assert response.status_code == 413
        assert response.json()["detail"] == "The file is larger than the 4 KB limit."
        # Far over: refused while the body arrives, naming the same limit.
        response = small.post("/predict", files={"file": ("big.png", SEVEN + b"\0" * 80_000)})
        assert response.status_code == 413
        assert response.json()["detail"] == "The upload is larger than the 4 KB limit."
        assert small.get("/health").status_code == 200


def test_the_default_limit_is_named_as_configured() -> None:
    assert human_size(ServingSettings().max_upload_bytes) == "5 MB"


def png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of width×height white pixels: tiny on the wire, huge once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\0" + b"\xff" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    compressed = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", compressed)
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding(client: TestClient) -> None:
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 5 * 2**20
    response = client.post("/predict", files={"file": ("bomb.png", bomb, "image/png")})
    assert response.status_code == 413
    assert "megapixels" in response.json()["detail"]
    assert client.get("/health").status_code == 200


def test_batch_reports_each_file(client: TestClient) -> None:
    files = [
        ("files", ("seven.png", SEVEN, "image/png")),
        ("files", ("one.bmp", image_bytes(drawn_one(), "BMP"), "image/bmp")),
        ("files", ("notes.txt", b"hello", "text/plain")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status_code"] for r in results] == [200, 200, 415]
    assert [r["filename"] for r in results] == ["seven.png", "one.bmp", "notes.txt"]
    assert results[2]["prediction"] is None and "not an image" in results[2]["error"]


def test_pixels_form(client: TestClient) -> None:
    images, _ = render_digits(1, seed=3)
    response = client.post("/predict/pixels", json={"pixels": images[0].tolist()})
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == served_version(client)
    ragged = client.post("/predict/pixels", json={"pixels": [[0, 255], [0]]})
    assert ragged.status_code == 422 and "rectangle" in ragged.json()["detail"]
    out_of_range = client.post("/predict/pixels", json={"pixels": [[0, 300], [0, 0]]})
    assert (
        out_of_range.status_code == 422
        and "less than or equal to 255" in out_of_range.json()["detail"]
    )
    not_numbers = client.post("/predict/pixels", json={"pixels": "seven"})
    assert not_numbers.status_code == 422 and "pixels" in not_numbers.json()["detail"]


@pytest.mark.parametrize(("offset", "uncertain"), [(1e-4, True), (-1e-4, False)])
def test_uncertain_flag_follows_the_threshold(client, trained_registry, offset, uncertain) -> None:
    """Just above the answer's confidence the answer is uncertain; just below, it is not."""
    confidence = client.post("/predict", files={"file": ("7.png", SEVEN)}).json()["confidence"]
    threshold = min(1.0, max(0.0, confidence + offset))
    app = create_app(settings_for(trained_registry, MNIST_UNCERTAIN_BELOW=threshold))
    with ready_client(app) as test_client:
        response = test_client.post("/predict", files={"file": ("7.png", SEVEN, "image/png")})
        assert response.json()["uncertain"] is uncertain
        # An uncertain answer says why in words; a confident one has no reason.
        assert (response.json()["reason"] is not None) is uncertain


@pytest.mark.parametrize(
    ("probabilities", "reason"),
    [
        ([0.1] * 10, "It does not look like a digit."),
        (
            [0.3, 0.25, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.005, 0.005],
            "It does not look like a digit.",
        ),
        ([0, 0, 0, 0, 0.48, 0, 0, 0, 0.02, 0.5], "It could be a 9 or a 4."),
    ],
    ids=["uniform", "spread", "two-way"],
)
def test_uncertain_reason_tells_a_non_digit_from_a_two_way_digit(probabilities, reason) -> None:
    assert uncertain_reason(np.array(probabilities)) == reason


def test_the_model_carries_its_own_threshold_and_calibration(client: TestClient) -> None:
    """Without MNIST_UNCERTAIN_BELOW the threshold chosen at training (in the ONNX file) applies."""
    info = client.get("/model").json()
    served = client.app.state.service.store.current.classifier.metadata
    assert info["uncertain_below"] == pytest.approx(served.uncertain_below)
    assert info["temperature"] == pytest.approx(served.temperature)
    assert served.temperature != 1.0  # fitted on the validation split by the train stage
    answer = client.post("/predict", files={"file": ("7.png", SEVEN)}).json()
    assert answer["uncertain"] is (answer["confidence"] < served.uncertain_below)


def test_not_ready_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()  # an empty store: a missing one is refused at start
    empty = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"}
    with ready_client(create_app(settings_for(empty))) as test_client:
        assert test_client.get("/health").status_code == 200
        ready = test_client.get("/ready")
        reason = ready.json()["reason"]
        assert ready.status_code == 503 and "mnist-cnn" in reason and "'production'" in reason
        assert str(tmp_path) not in reason  # the tracking URI is not shown to clients
        response = test_client.post("/predict", files={"file": ("7.png", SEVEN, "image/png")})
        assert response.status_code == 503 and "No model is loaded" in response.json()["detail"]


def register_shifted_copy(
    settings: ServingSettings, source: ModelVersion, artifacts: Path
) -> ModelVersion:
    """Register a version whose answers differ from `source`'s: its ONNX graph with the last
    layer's bias shifted, so that any mixing of versions shows in the probabilities. Its run
    keeps its files in `artifacts`."""
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{source.name}/{source.version}", tracking_uri=settings.tracking_uri
        )
    )
    model = onnx.load(str(local / "model.onnx"))
    last_bias = next(init for init in model.graph.initializer if list(init.dims) == [10])
    bias = onnx.numpy_helper.to_array(last_bias) + np.linspace(-2, 2, 10, dtype=np.float32)
    last_bias.CopyFrom(onnx.numpy_helper.from_array(bias, last_bias.name))
    mlflow.set_tracking_uri(settings.tracking_uri)
    experiment = mlflow.create_experiment("shifted", artifact_location=artifacts.as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.onnx.log_model(model, name="model", save_as_external_data=False)
    return MlflowClient(settings.tracking_uri).create_model_version(
        source.name, info.model_uri, run.info.run_id
    )


def expected_probabilities(settings: ServingSettings, version: str, pixels: np.ndarray):
    onnx_model = read_onnx_model(settings.model_name, version, settings.tracking_uri)
    return DigitClassifier(onnx_model, threads=1).predict_proba(pixels)


def test_alias_moves_during_load_never_mix_versions(
    registry_copy: dict[str, str], tmp_path: Path
) -> None:
    """The alias moves back and forth while batch requests run: none fails, and every answer
    carries exactly the probabilities of the version it names."""
    settings = settings_for(registry_copy, MNIST_POLL_SECONDS=0.05)
    registry = MlflowClient(settings.tracking_uri)
    first = registry.get_model_version_by_alias(settings.model_name, settings.model_alias)
    second = register_shifted_copy(settings, first, tmp_path / "artifacts")
    images, _ = render_digits(4, seed=11)
    uploads = [
        ("files", (f"{i}.png", image_bytes(Image.fromarray(img), "PNG")))
        for i, img in enumerate(images)
    ]
    preprocessed = np.stack([to_mnist(Image.fromarray(image)) for image in images])
    expected = {
        str(v.version): expected_probabilities(settings, str(v.version), preprocessed)
        for v in (first, second)
    }
    assert np.abs(expected[str(first.version)] - expected[str(second.version)]).max() > 0.01
    answers: list[tuple[str, np.ndarray]] = []
    with ready_client(create_app(settings)) as test_client, ThreadPoolExecutor(8) as pool:

        def classify_batches() -> None:
            for _ in range(300):  # until the alias has stopped moving; bounded all the same
                response = test_client.post("/predict/batch", files=uploads)
                assert response.status_code == 200, response.text
                body = response.json()
                rows = [item["prediction"]["probabilities"] for item in body["results"]]
                assert {item["prediction"]["model_version"] for item in body["results"]} == {
                    body["model_version"]
                }
                answers.append((body["model_version"], np.array(rows)))
                if moved.is_set():
                    return

        moved = threading.Event()
        in_flight = [pool.submit(classify_batches) for _ in range(8)]
        try:
            for version in (second, first) * 3:
                promote(registry, settings, str(version.version))
                assert wait_for_version(test_client, str(version.version))
        finally:
            moved.set()
            rollback(registry, settings)
            promote(registry, settings, str(first.version))
        for future in in_flight:
            future.result()
    assert {version for version, _ in answers} == set(expected)  # both versions answered
    for version, rows in answers:
        assert np.abs(rows - expected[version]).max() < 1e-5, version


def wait_for_version(client: TestClient, version: str, attempts: int = 100) -> bool:
    for _ in range(attempts):
        if served_version(client) == version:
            return True
        time.sleep(0.05)
    return False


def test_prometheus_metrics(client: TestClient) -> None:
    client.post("/predict", files={"file": ("7.png", SEVEN, "image/png")})
    text = client.get("/metrics").text
    assert 'mnist_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert "mnist_http_request_duration_seconds_bucket" in text
    assert "mnist_predictions_total{digit=" in text
    assert (
        f'mnist_model_version{{alias="production",name="mnist-cnn"}} '
        f"{float(served_version(client))}" in text
    )
    # The alias names the served version once it is loaded (the alert compares the two).
    assert (
        f'mnist_alias_version{{alias="production",name="mnist-cnn"}} '
        f"{float(served_version(client))}" in text
    )


def test_index_page_and_docs(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    docs = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/predict/pixels", "/model", "/ready"} <= set(
        schema["paths"]
    )
    ok = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"].endswith("/Prediction")


def test_streamed_upload_is_cut_off_at_the_limit(trained_registry: dict[str, str]) -> None:
    """Without a Content-Length header the body is counted as it arrives."""
    boundary = "limit-test"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    body = head + b"\0" * 200_000 + f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    app = create_app(settings_for(trained_registry, MNIST_MAX_UPLOAD_BYTES=4096))
    with ready_client(app) as small:
        response = small.post(
            "/predict",
            content=chunks(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 413, response.text
        assert "limit" in response.json()["detail"]


def test_the_picture_the_model_saw_comes_on_request(client: TestClient) -> None:
    """`?model_view=true`: the 28×28 grey levels the model classified, as a small PNG."""
    upload = {"file": ("7.png", SEVEN, "image/png")}
    plain = client.post("/predict", files=upload).json()
    viewed = client.post("/predict?model_view=true", files=upload).json()
    assert plain["model_view"] is None
    prefix = "data:image/png;base64,"
    assert viewed["model_view"].startswith(prefix) and len(viewed["model_view"]) < 2000
    png = base64.b64decode(viewed["model_view"].removeprefix(prefix))
    with Image.open(io.BytesIO(png)) as picture:
        assert (picture.size, picture.mode) == ((28, 28), "L")
        assert (np.asarray(picture) == to_mnist(Image.open(io.BytesIO(SEVEN)))).all()
    grey = np.zeros((28, 28), np.uint8)
    grey[4:24, 13:16] = 255
    pixels = client.post("/predict/pixels?model_view=true", json={"pixels": grey.tolist()})
    assert pixels.json()["model_view"].startswith(prefix)
    bad = client.post("/predict?model_view=perhaps", files=upload)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("query.model_view:")
