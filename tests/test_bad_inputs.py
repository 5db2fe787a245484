"""A corpus of bad and odd uploads, generated here (nothing downloaded): each gets its documented
status and sentence, never a 5xx, and the server answers normally afterwards."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SEED_IMAGES, ready_client
from tests.test_api import png_bomb

SEVEN = (SEED_IMAGES / "num_7.png").read_bytes()


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def drawn_seven(mode: str = "L", size: tuple[int, int] = (120, 160)) -> Image.Image:
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line([(20, 30), (100, 30), (50, 140)], fill=0, width=12)
    return image.convert(mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_broken_exif(png: bytes) -> bytes:
    """A valid PNG with an `eXIf` chunk of garbage before its image data."""
    at = png.index(b"IDAT") - 4
    return png[:at] + png_chunk(b"eXIf", b"MM\x00*garbage-not-a-tiff") + png[at:]


def sixteen_bit_png() -> bytes:
    levels = np.asarray(drawn_seven(), dtype=np.uint16) * 257
    return save(Image.fromarray(levels), "PNG")


def palette_png_with_transparency() -> bytes:
    image = drawn_seven("RGB").convert("P")
    return save(image, "PNG", transparency=int(np.asarray(image)[0, 0]))


def animated_gif() -> bytes:
    first, second = drawn_seven("RGB"), Image.new("RGB", (120, 160), "white")
    return save(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def strip() -> bytes:
    image = Image.new("L", (10000, 10), 255)
    ImageDraw.Draw(image).rectangle([(4990, 0), (5005, 9)], fill=0)
    return save(image, "PNG")


# (name, body, client's content type, expected status, a phrase of the answer or "")
UPLOADS: list[tuple[str, Callable[[], bytes], str, int, str]] = [
    ("empty", lambda: b"", "image/png", 422, "empty"),
    ("one byte", lambda: b"\x89", "image/png", 415, "not an image"),
    ("truncated PNG", lambda: SEVEN[: len(SEVEN) // 2], "image/png", 422, "corrupt or truncated"),
    (
        "PNG signature then garbage",
        lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "image/png",
        415,
        "not an image",
    ),
    ("malformed EXIF", lambda: with_broken_exif(save(drawn_seven(), "PNG")), "image/png", 200, ""),
    ("text named .png", lambda: b"this is not an image\n", "image/png", 415, "not an image"),
    (
        "SVG with script",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        "image/svg+xml",
        415,
        "not an image",
    ),
    ("PDF", lambda: b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF", "application/pdf", 415, "PNG"),
    ("TIFF", lambda: save(drawn_seven(), "TIFF"), "image/tiff", 415, "not an image"),
    ("16-bit PNG", sixteen_bit_png, "image/png", 200, ""),
    ("CMYK JPEG", lambda: save(drawn_seven("CMYK"), "JPEG"), "image/jpeg", 200, ""),
    ("palette PNG, transparent", palette_png_with_transparency, "image/png", 200, ""),
    ("animated GIF", animated_gif, "image/gif", 200, ""),
    ("1×1", lambda: save(Image.new("L", (1, 1), 0), "PNG"), "image/png", 422, "blank"),
    ("10000×10 strip", strip, "image/png", 200, ""),
    ("header of 20000×20000", lambda: png_bomb(20000, 20000), "image/png", 413, "megapixels"),
    ("PNG sent as a PDF", lambda: SEVEN, "application/pdf", 200, ""),
]


@pytest.fixture(scope="module")
def client(trained_registry: dict[str, str]) -> TestClient:
    with ready_client(create_app(ServingSettings(**trained_registry))) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("make", "content_type", "status", "phrase"),
    [case[1:] for case in UPLOADS],
    ids=[case[0] for case in UPLOADS],
)
def test_each_upload_gets_its_documented_answer(
    client: TestClient, make: Callable[[], bytes], content_type: str, status: int, phrase: str
) -> None:
    response = client.post("/predict", files={"file": ("upload.png", make(), content_type)})
    assert response.status_code == status, response.text
    body = response.json()
    if status == 200:
        assert body["digit"] in range(10)
    else:
        assert phrase in body["detail"] and len(body["detail"]) < 300
        assert "Traceback" not in body["detail"] and "sqlite" not in body["detail"]
    assert client.post("/predict", files={"file": ("7.png", SEVEN)}).status_code == 200


def test_fifty_megabytes_are_refused_by_their_length(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("big.png", b"\0" * (50 * 2**20))})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_many_multipart_fields_are_refused(client: TestClient) -> None:
    fields = {f"field{i}": "x" for i in range(2000)}
    response = client.post("/predict", data=fields, files={"file": ("7.png", SEVEN)})
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]


def test_multipart_without_boundary_is_a_sentence(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b"--x\r\n\r\n", headers={"content-type": "multipart/form-data"}
    )
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]


def test_huge_pixel_body_of_non_numbers_gets_a_short_answer(client: TestClient) -> None:
    text = client.post("/predict/pixels", json={"pixels": [["x"] * 512 for _ in range(512)]})
    assert text.status_code == 422
    assert len(text.content) < 2000 and "numbers, not text" in text.json()["detail"]
    response = client.post("/predict/pixels", json={"pixels": [[300] * 512 for _ in range(512)]})
    assert response.status_code == 422
    assert len(response.content) < 2000 and "more problems" in response.json()["detail"]
    too_big = client.post("/predict/pixels", content=b"[" + b"0," * 4_000_000 + b"0]")
    assert too_big.status_code == 413


def test_a_full_pending_budget_answers_503_with_retry_after(
    trained_registry: dict[str, str],
) -> None:
    """Large pictures beyond the pending-pixels budget are refused at once, not queued."""
    settings = ServingSettings(**trained_registry, MNIST_MAX_PENDING_PIXELS=100_000)
    with ready_client(create_app(settings)) as small_budget:
        decode_pool = small_budget.app.state.service.decode_pool
        decode_pool.pending = 90_000  # as if another large picture were being decoded
        response = small_budget.post("/predict", files={"file": ("7.png", SEVEN)})
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "busy" in response.json()["detail"]
        decode_pool.pending = 0
        assert small_budget.post("/predict", files={"file": ("7.png", SEVEN)}).status_code == 200


def test_cross_origin_calls_are_closed_unless_configured(trained_registry: dict[str, str]) -> None:
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    with ready_client(create_app(ServingSettings(**trained_registry))) as closed:
        response = closed.options("/predict", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    settings = ServingSettings(**trained_registry, MNIST_CORS_ORIGINS="https://elsewhere.example")
    with ready_client(create_app(settings)) as open_to_one:
        response = open_to_one.options("/predict", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://elsewhere.example"
        other = {**preflight, "Origin": "https://attacker.example"}
        assert (
            "access-control-allow-origin"
            not in open_to_one.options("/predict", headers=other).headers
        )
