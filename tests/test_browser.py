"""The web page in a real browser: Playwright drives Debian's Chromium against the live app.

Needs a Chromium binary (`apt-get install chromium`; another one can be named with the
CHROMIUM_EXECUTABLE environment variable); without one they are skipped, except under CI. They also
write the README's screenshots into docs/screenshots/.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from tests.conftest import served_in_thread

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEED_IMAGES = PROJECT_ROOT / "tests" / "data"
# Screenshots go to a temporary folder, or to SCREENSHOT_DIR: the README's are refreshed with
#   LIVE_SERVER_TRACKING_URI=sqlite:///mlflow.db SCREENSHOT_DIR=docs/screenshots \
#   pytest tests/test_browser.py
SCREENSHOT_DIR = os.environ.get("SCREENSHOT_DIR")
VIEWPORT = {"width": 1100, "height": 900}
CHROMIUM = os.environ.get("CHROMIUM_EXECUTABLE") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NO_FILE_MESSAGE = "Choose or drop an image first."
# The page's POST /predict, with its query (`?model_view=true`).
PREDICT = re.compile(r"/predict(\?[^/]*)?$")
# The page's stable hooks, for these tests and for anyone scripting the page.
ELEMENT_IDS = (
    "file-input", "drop-zone", "preview", "predict-upload",
    "canvas", "clear-canvas", "predict-canvas",
    "result", "result-digit", "result-confidence", "result-version", "probabilities",
    "message",
)  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_EXECUTABLE)"
        if os.environ.get("CI"):  # CI installs it (.ci/run): missing there is a failure
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def requests_made() -> list[Request]:
    """Every request the page makes, in order."""
    return []


@pytest.fixture
def page(browser: Browser, live_server_url: str, requests_made: list[Request]) -> Iterator[Page]:
    """A fresh tab with the app's page loaded; fails the test on any uncaught JavaScript error."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests_made.append(request))
    page.goto(f"{live_server_url}/")
    expect(page.locator("#probabilities > [data-digit]")).to_have_count(10)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path_factory.mktemp("screenshots")


def screenshot(page: Page, directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / name), full_page=True, animations="disabled")
    assert (directory / name).stat().st_size > 10_000  # a rendered page, not an empty image


def predict_calls(requests_made: list[Request]) -> list[Request]:
    return [r for r in requests_made if r.method == "POST" and PREDICT.search(r.url)]


def test_page_loads_only_its_own_assets(
    page: Page, live_server_url: str, requests_made: list[Request]
) -> None:
    expect(page).to_have_title("MNIST digit recognizer")
    for element_id in ELEMENT_IDS:
        expect(page.locator(f"#{element_id}")).to_be_attached()
    expect(page.locator("#message")).to_have_attribute("role", "alert")
    expect(page.locator("#result")).to_be_hidden()
    # The footer shows the served model, fetched from GET /model.
    expect(page.locator("#model-info")).to_contain_text("version")

    urls = [r.url for r in requests_made]
    assert f"{live_server_url}/static/app.js" in urls
    assert f"{live_server_url}/static/style.css" in urls
    foreign = [u for u in urls if not u.startswith((live_server_url, "data:", "blob:"))]
    assert not foreign, f"the page must not load anything from elsewhere: {foreign}"
    for request in requests_made:
        response = request.response()
        if request.url.startswith(live_server_url) and response is not None:
            assert response.ok, f"{request.url} answered {response.status}"


def test_upload_and_predict(page: Page, live_server_url: str, screenshots: Path) -> None:
    page.locator("#file-input").set_input_files(SEED_IMAGES / "num_7.png")
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#file-name")).to_contain_text("num_7.png")

    with page.expect_response(PREDICT) as response_info:
        page.locator("#predict-upload").click()
    assert response_info.value.status == 200

    digit_text = page.locator("#result-digit")
    # The tiny test model is not accurate: any single digit will do.
    expect(digit_text).to_have_text(re.compile(r"^[0-9]$"))
    digit = digit_text.inner_text()
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#result-confidence")).to_have_text(re.compile(r"^<?\d+(\.\d)?%$"))
    model = page.request.get(f"{live_server_url}/model").json()
    expect(page.locator("#result-version")).to_have_text(str(model["version"]))

    bars = page.locator("#probabilities > [data-digit]")
    expect(bars).to_have_count(10)
    assert [bar.get_attribute("data-digit") for bar in bars.all()] == [str(d) for d in range(10)]
    expect(page.locator(f'#probabilities > [data-digit="{digit}"]')).to_have_class(
        re.compile(r"\bis-predicted\b")
    )
    expect(page.locator("#probabilities > .is-predicted")).to_have_count(1)
    expect(page.locator("#message")).to_be_hidden()
    screenshot(page, screenshots, "success.png")


def test_predict_without_a_file_asks_for_one(
    page: Page, requests_made: list[Request], screenshots: Path
) -> None:
    page.locator("#predict-upload").click()
    message = page.locator("#message")
    expect(message).to_be_visible()
    expect(message).to_have_text(NO_FILE_MESSAGE)
    expect(page.locator("#result")).to_be_hidden()
    assert not predict_calls(requests_made), "no file chosen: the API must not be called"
    screenshot(page, screenshots, "no-upload.png")


def test_wrong_file_type_shows_the_api_message(page: Page, screenshots: Path) -> None:
    page.locator("#file-input").set_input_files(SEED_IMAGES / "not_an_image.txt")
    expect(page.locator("#file-name")).to_contain_text("not_an_image.txt")
    with page.expect_response(PREDICT) as response_info:
        page.locator("#predict-upload").click()
    response = response_info.value
    assert response.status == 415
    detail = response.json()["detail"]

    message = page.locator("#message")
    expect(message).to_be_visible()
    expect(message).to_have_text(detail)
    expect(message).to_contain_text("image")
    expect(page.locator("#result")).to_be_hidden()
    screenshot(page, screenshots, "wrong-file.png")


def test_drop_an_image_on_the_drop_zone(page: Page) -> None:
    data = (SEED_IMAGES / "num_7.png").read_bytes()
    data_transfer = page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            const file = new File([new Uint8Array(bytes)], "num_7.png", {type: "image/png"});
            transfer.items.add(file);
            return transfer;
        }""",
        list(data),
    )
    drop_zone = page.locator("#drop-zone")
    drop_zone.dispatch_event("dragenter", {"dataTransfer": data_transfer})
    drop_zone.dispatch_event("drop", {"dataTransfer": data_transfer})
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#file-name")).to_contain_text("num_7.png")

    page.locator("#predict-upload").click()
    expect(page.locator("#result-digit")).to_have_text(re.compile(r"^[0-9]$"))


def dark_pixels(page: Page) -> int:
    return page.evaluate(
        """() => {
            const canvas = document.getElementById("canvas");
            const {data} = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            let dark = 0;
            for (let i = 0; i < data.length; i += 4) if (data[i] < 128) dark++;
            return dark;
        }"""
    )


def canvas_box(page: Page) -> dict[str, float] | None:
    """The canvas's box in the viewport, scrolled into it first (the answer, below the canvas,
    may have scrolled the page: the mouse draws at viewport coordinates)."""
    canvas = page.locator("#canvas")
    canvas.scroll_into_view_if_needed()
    return canvas.bounding_box()


def draw_seven(page: Page) -> None:
    box = canvas_box(page)
    assert box is not None

    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    page.mouse.move(*at(0.25, 0.22))
    page.mouse.down()
    page.mouse.move(*at(0.75, 0.22), steps=12)
    page.mouse.move(*at(0.45, 0.82), steps=16)
    page.mouse.up()


def test_draw_and_predict(page: Page, screenshots: Path) -> None:
    canvas = page.locator("#canvas")
    assert canvas.evaluate("c => getComputedStyle(c).touchAction") == "none"
    assert dark_pixels(page) == 0

    draw_seven(page)
    assert dark_pixels(page) > 1000, "the stroke should leave thick black ink"

    # Request events carry no blob bodies: read the upload on its way through a route instead.
    bodies: list[bytes | None] = []

    def pass_through(route: Route) -> None:
        bodies.append(route.request.post_data_buffer)
        route.continue_()

    page.route(PREDICT, pass_through)
    with page.expect_response(PREDICT) as response_info:
        page.locator("#predict-canvas").click()
    assert response_info.value.status == 200
    expect(page.locator("#result-digit")).to_have_text(re.compile(r"^[0-9]$"))
    expect(page.locator("#probabilities > [data-digit]")).to_have_count(10)

    # The drawing goes up as a PNG file named canvas.png in the multipart field `file`.
    assert len(bodies) == 1
    body = bodies[0]
    assert body is not None
    assert b'name="file"; filename="canvas.png"' in body
    assert b"Content-Type: image/png" in body
    assert b"\x89PNG\r\n\x1a\n" in body
    screenshot(page, screenshots, "canvas.png")

    page.locator("#clear-canvas").click()
    assert dark_pixels(page) == 0
    page.locator("#predict-canvas").click()
    expect(page.locator("#message")).to_contain_text("Draw a digit")


def test_the_page_shows_the_picture_the_model_saw_pixel_exact(page: Page) -> None:
    draw_seven(page)
    with page.expect_response(PREDICT) as response_info:
        page.locator("#predict-canvas").click()
    assert "model_view=true" in response_info.value.url
    answer = response_info.value.json()
    view = page.locator("#model-view-image")
    expect(view).to_be_visible()
    assert view.evaluate("image => [image.naturalWidth, image.naturalHeight]") == [28, 28]
    assert view.evaluate("image => getComputedStyle(image).imageRendering") == "pixelated"
    # What the page shows is what the API says the model saw, each pixel a sharp 4×4 square.
    encoded = answer["model_view"].removeprefix("data:image/png;base64,")
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))
    assert seen.shape == (28, 28) and seen.max() == 255  # the white digit on black
    enlarged = np.kron(seen, np.ones((4, 4), np.uint8))
    # The element's screenshot is its box rounded outwards (a row or column more where the box
    # starts between two pixels): the picture is the 112×112 square in it.
    shown = np.asarray(Image.open(io.BytesIO(view.screenshot())).convert("L"))
    rows, columns = shown.shape[0] - 111, shown.shape[1] - 111
    assert 1 <= rows <= 2 and 1 <= columns <= 2, shown.shape
    assert any((shown[y : y + 112, x : x + 112] == enlarged).all()
               for y in range(rows) for x in range(columns))  # fmt: skip


@pytest.fixture(scope="module")
def doubtful_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app serving a model that spreads its probability evenly over the ten digits, whatever
    it is shown: every answer is `uncertain` and does not look like a digit. (With
    LIVE_SERVER_TRACKING_URI, the real production model instead, for the README's screenshot.)"""
    import torch

    from mnist_core.classifier import ModelMetadata
    from pipeline.training.export import export_onnx
    from pipeline.training.model import DigitCNN
    from serving.app import create_app
    from serving.settings import ServingSettings

    store = os.environ.get("LIVE_SERVER_TRACKING_URI")
    if store:
        settings = ServingSettings(MLFLOW_TRACKING_URI=store)
    else:
        network = DigitCNN((8, 16), hidden_units=16)
        last = network.classifier[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        path = tmp_path_factory.mktemp("uniform") / "model.onnx"
        export_onnx(network, path, ModelMetadata(uncertain_below=0.5))
        settings = ServingSettings(MNIST_MODEL_PATH=str(path))
    with served_in_thread(create_app(settings)) as url:
        yield url


def draw_letter_x(page: Page) -> None:
    box = canvas_box(page)
    assert box is not None
    for start, end in (((0.25, 0.2), (0.75, 0.8)), ((0.75, 0.2), (0.25, 0.8))):
        page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
        page.mouse.down()
        page.mouse.move(
            box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=14
        )
        page.mouse.up()


def test_a_drawn_letter_is_answered_in_words(
    browser: Browser, doubtful_server_url: str, screenshots: Path
) -> None:
    """A picture the model does not take for a digit gets no digit as its answer: the page says
    it does not look like one."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{doubtful_server_url}/")
    draw_letter_x(page)
    with page.expect_response(PREDICT) as response_info:
        page.locator("#predict-canvas").click()
    answer = response_info.value.json()
    assert answer["uncertain"] is True and answer["reason"] == "It does not look like a digit."

    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#result-digit")).to_have_text("?")
    reason = page.locator("#result-uncertain")
    expect(reason).to_be_visible()
    expect(reason).to_have_text("It does not look like a digit.")
    screenshot(page, screenshots, "not-a-digit.png")
    context.close()


def test_right_question_stores_the_users_answers(
    page: Page, private_prediction_store: str, screenshots: Path
) -> None:
    """After each answer the page asks "Right?": yes, the right digit, or not a digit. Each
    click is stored as pending feedback on that very prediction, and the user is thanked."""
    from monitoring.records import FeedbackFilter
    from monitoring.store import open_store

    expect(page.locator("#feedback")).to_be_hidden()
    answers = []
    for choice in ("yes", "other digit", "not a digit"):
        page.locator("#clear-canvas").click()
        draw_seven(page)
        with page.expect_response(PREDICT) as response_info:
            page.locator("#predict-canvas").click()
        answer = response_info.value.json()
        expect(page.locator("#feedback-question")).to_have_text("Right?")
        expect(page.locator("#feedback-thanks")).to_be_hidden()
        # "Yes" stands for the predicted digit: its own button is not offered again.
        expect(page.locator(f'#feedback-digits [data-label="{answer["digit"]}"]')).to_be_hidden()
        other = (answer["digit"] + 1) % 10
        button = {
            "yes": page.locator("#feedback-yes"),
            "other digit": page.locator(f'#feedback-digits [data-label="{other}"]'),
            "not a digit": page.locator("#feedback-not-digit"),
        }[choice]
        if choice == "other digit":
            screenshot(page, screenshots, "feedback-question.png")
        with page.expect_response("**/feedback") as feedback_info:
            button.click()
        assert feedback_info.value.status == 201, feedback_info.value.text()
        expect(page.locator("#feedback-thanks")).to_contain_text("Thanks!")
        expect(page.locator("#feedback-choices")).to_be_hidden()
        answers.append((answer, {"yes": str(answer["digit"]), "other digit": str(other),
                                 "not a digit": "not_a_digit"}[choice]))  # fmt: skip
    screenshot(page, screenshots, "feedback-thanks.png")

    store = open_store(private_prediction_store)
    try:
        ids = tuple(answer["prediction_id"] for answer, _ in answers)
        stored = {row.prediction_id: row for row in store.list_feedback(FeedbackFilter(ids=ids))}
    finally:
        store.close()
    assert {key: (row.label, row.status, row.source) for key, row in stored.items()} == {
        answer["prediction_id"]: (label, "pending", "canvas") for answer, label in answers
    }


def ready_version(url: str) -> str | None:
    with urllib.request.urlopen(f"{url}/ready", timeout=10) as response:
        return json.load(response).get("model_version")


def draw_stroke_digit(page: Page, points: list[tuple[float, float]]) -> None:
    """One stroke through `points` (fractions of the canvas)."""
    box = canvas_box(page)
    assert box is not None
    page.mouse.move(box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"])
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=12)
    page.mouse.up()


# Ones of several slants and sevens of several corners: distinct inputs, so none counts twice.
LOOP_DRAWINGS = [("1", [(0.5 + s, 0.2), (0.5 - s, 0.8)]) for s in (-0.12, -0.06, 0, 0.05, 0.1)] + [
    ("7", [(0.25, 0.22), (0.75, 0.22 + t), (0.45 - t, 0.82)]) for t in (0, 0.04, 0.08, 0.12, 0.16)
]


def test_the_whole_loop_from_the_page_to_a_served_version(
    browser: Browser,
    raw_mnist,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15's loop: a version serves; a user draws digits and corrects the answers on the
    page; a reviewer accepts them (`monitoring.review`); the pipeline retrains on them; the new
    version carries its held-out feedback score in the registry; once `production` moves to it
    (`mnist-registry promote`), the API serves it."""
    import yaml
    from mlflow.tracking import MlflowClient

    from monitoring import review
    from pipeline.registry import commands as registry
    from pipeline.stages import feedback as feedback_stage
    from serving.app import create_app
    from serving.settings import ServingSettings
    from tests.conftest import STAGES, tiny_params

    monkeypatch.chdir(tmp_path)
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MNIST_ARTIFACT_ROOT": str(tmp_path / "mlartifacts"),
        "MNIST_STORE_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    params = tiny_params(*raw_mnist)
    params["feedback"]["held_out_share"] = 0.5  # ten inputs: both sides get some
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stages = [*STAGES[:3], feedback_stage, *STAGES[3:]]

    def repro() -> None:
        for stage in stages:
            stage.main(["--params", str(tmp_path / "params.yaml")])

    repro()  # version 1, in production: nothing was there
    settings = ServingSettings(**env, MNIST_POLL_SECONDS=0.5)
    with served_in_thread(create_app(settings)) as url:
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(20_000)
        page.goto(f"{url}/")
        for label, points in LOOP_DRAWINGS:
            page.locator("#clear-canvas").click()
            draw_stroke_digit(page, points)
            with page.expect_response(PREDICT) as response_info:
                page.locator("#predict-canvas").click()
            answer = response_info.value.json()
            assert answer["model_version"] == "1"
            right = answer["digit"] == int(label)
            button = "#feedback-yes" if right else f'#feedback-digits [data-label="{label}"]'
            with page.expect_response("**/feedback") as feedback_info:
                page.locator(button).click()
            assert feedback_info.value.status == 201, feedback_info.value.text()
        page.close()

        with pytest.raises(SystemExit) as exit_info:
            review.main(["accept", "--all-pending"])
        assert exit_info.value.code == 0
        repro()  # a tree outside git: version 2 becomes the challenger at most

        client = MlflowClient()
        challenger = client.get_model_version_by_alias("mnist-cnn", "challenger")
        assert str(challenger.version) == "2"
        held_out = json.loads((tmp_path / params["evaluate"]["metrics"]).read_text())
        assert held_out["feedback_count"] > 0, "every input landed on the training side"
        assert challenger.tags["feedback_count"] == str(held_out["feedback_count"])
        assert "feedback_accuracy" in challenger.tags
        train_run = client.get_run(challenger.run_id).data
        assert (
            int(train_run.params["feedback_digits"])
            == len(LOOP_DRAWINGS) - held_out["feedback_count"]
        )

        registry.main(["promote", "2", "--reason", "trained on the users' corrections"])
        deadline = time.monotonic() + 30
        while (served := ready_version(url)) != "2":
            assert time.monotonic() < deadline, f"still serving version {served}"
            time.sleep(0.2)  # the API polls the alias every 0.5 s
