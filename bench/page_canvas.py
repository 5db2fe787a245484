"""Make `bench/data/page_canvas.png`: a 7 drawn with the mouse on the web page's own canvas in
headless Chromium, as the page uploads it (`canvas.toBlob`, PNG).

    python -m bench.page_canvas          # needs Debian's chromium (or $CHROMIUM_EXECUTABLE)

The page is `serving/static`, served to the browser from the files themselves (no server, no
model: only its drawing code runs). The benchmarks upload this file as the page's request: the
browser's anti-aliased strokes and its PNG encoder differ from a picture drawn with Pillow.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # playwright: only to draw, not to name the file
    from playwright.sync_api import Route

STATIC = Path(__file__).resolve().parent.parent / "serving" / "static"
PAGE_CANVAS = Path(__file__).resolve().parent / "data" / "page_canvas.png"
# A 7 in canvas pixels (the canvas is 280×280): the top bar, then the stem.
STROKE = [(70, 60), (210, 60), (120, 230)]
STEPS_PER_SEGMENT = 30


def serve_static(route: Route) -> None:
    path = route.request.url.split("://", 1)[1].split("/", 1)[1].split("?")[0]
    file = STATIC / ("index.html" if path in ("", "/") else path.removeprefix("static/"))
    if file.is_file():
        route.fulfill(path=str(file))
    else:  # the API's endpoints: not needed to draw
        route.fulfill(status=503, body="{}", content_type="application/json")


def draw(out: Path) -> int:
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM_EXECUTABLE") or shutil.which("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--headless=new"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1200})
            page.route("**/*", serve_static)
            page.goto("http://page.invalid/")
            canvas = page.locator("#canvas")
            box = canvas.bounding_box()
            assert box is not None
            scale = box["width"] / 280

            def at(point: tuple[float, float]) -> tuple[float, float]:
                return box["x"] + point[0] * scale, box["y"] + point[1] * scale

            page.mouse.move(*at(STROKE[0]))
            page.mouse.down()
            for point in STROKE[1:]:
                page.mouse.move(*at(point), steps=STEPS_PER_SEGMENT)
            page.mouse.up()
            data_url = page.evaluate(
                """() => new Promise((resolve) => document.getElementById("canvas").toBlob(
                    (blob) => { const r = new FileReader(); r.onload = () => resolve(r.result);
                                r.readAsDataURL(blob); }, "image/png"))"""
            )
        finally:
            browser.close()
    data = base64.b64decode(data_url.split(",", 1)[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PAGE_CANVAS)
    args = parser.parse_args()
    print(f"{args.out}: {draw(args.out):,} bytes")


if __name__ == "__main__":
    main()
