"""Review with pictures: the sheet and the terminal show the stored 28×28 inputs themselves."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monitoring.pictures import block_picture
from monitoring.records import PredictionRecord, new_prediction_id
from monitoring.review import main
from monitoring.store import open_store

DATA_URI = re.compile(r'<figure id="(\w+)"><img src="data:image/png;base64,([^"]+)"')


def answer(pixels: np.ndarray, digit: int) -> PredictionRecord:
    probabilities = np.full(10, 0.02, np.float32)
    probabilities[digit] = 0.82
    return PredictionRecord(id=new_prediction_id(), model_version="3", source="canvas",
                            pixels=pixels, digit=digit, probabilities=probabilities.tolist(),
                            uncertain=False)  # fmt: skip


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'predictions.db'}"


@pytest.fixture
def inputs(url: str) -> dict[str, np.ndarray]:
    """Four answers with feedback on distinct random inputs, the first already accepted."""
    rng = np.random.default_rng(0)
    store = open_store(url)
    answers = [answer(rng.integers(0, 256, (28, 28), dtype=np.uint8), d) for d in (7, 1, 3, 8)]
    store.add_predictions(answers)
    for record, label in zip(answers, ["7", "7", "3", "not_a_digit"], strict=True):
        store.add_feedback(record.id, label, "client")
    main_exit(url, "accept", answers[0].id)
    store.close()
    return {record.id: record.pixels for record in answers}


def main_exit(url: str, *argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", url, *argv])
    return exit_info.value.code


def test_the_sheet_shows_each_pending_input_exactly(
    inputs: dict[str, np.ndarray], url: str, tmp_path: Path
) -> None:
    before = set(tmp_path.iterdir())
    sheet = tmp_path / "review" / "sheet.html"
    sheet.parent.mkdir()
    assert main_exit(url, "sheet", "--out", str(sheet)) == 0
    assert set(tmp_path.iterdir()) - before == {sheet.parent}  # only the file asked for
    html = sheet.read_text()
    shown = DATA_URI.findall(html)
    pending = list(inputs)[1:]
    assert [prediction_id for prediction_id, _ in shown] == pending  # oldest first
    for prediction_id, encoded in shown:
        picture = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert (picture.mode, picture.size) == ("L", (28, 28))
        assert np.array_equal(np.asarray(picture), inputs[prediction_id])  # lossless, as stored
    assert html.count('width="140" height="140"') == 3  # 5× enlarged
    assert "image-rendering: pixelated" in html
    assert "confidence 0.8200" in html and '<span class="disagree">7</span>' in html
    assert not re.search(r"<script|https?://|src=\"(?!data:)", html)  # self-contained

    # The filters are `list`'s: the accepted one, by status and label.
    main_exit(url, "sheet", "--out", str(sheet), "--status", "accepted", "--label", "7")
    assert [i for i, _ in DATA_URI.findall(sheet.read_text())] == list(inputs)[:1]


def test_a_terminal_picture_puts_ink_where_the_strokes_are() -> None:
    pixels = np.zeros((28, 28), np.uint8)
    pixels[0:4, 0:4] = 255  # a 4×4 blot in the corner: two half-block cells, full
    pixels[10:12, 20:28] = 200  # a bar two pixels high: one pooled row, the lower half
    lines = block_picture(pixels)
    assert len(lines) == 7 and {len(line) for line in lines} == {14}
    assert lines[0] == "██" + " " * 12
    assert lines[2] == " " * 10 + "▄" * 4
    assert all(set(line) == {" "} for i, line in enumerate(lines) if i not in (0, 2))


def test_list_shows_each_input_as_a_picture(
    inputs: dict[str, np.ndarray], url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main_exit(url, "list", "--status", "pending")
    out = capsys.readouterr().out.splitlines()
    for prediction_id, pixels in list(inputs.items())[1:]:
        start = next(i for i, line in enumerate(out) if line.startswith(prediction_id))
        assert [line.removeprefix("    ") for line in out[start + 1 : start + 8]] == (
            block_picture(pixels)
        )
    main_exit(url, "list", "--no-pictures")
    assert len(capsys.readouterr().out.splitlines()) == 1 + 4 + 1  # header, rows, summary
