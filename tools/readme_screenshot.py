"""Remake docs/screenshot.png, the README's picture: a 4 drawn on the page in two strokes
with real pointer events, the shipped model's answer beside it.

    python tools/readme_screenshot.py [--out docs/screenshot.png]

Needs Chromium (Debian: tools/install-system-deps.sh) and Playwright (the dev extras).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).resolve().parents[1] / "docs"
PORT = 8765
# Two strokes in the canvas's units: the slant and bar, then the stem.
FOUR = [[(0.62, 0.15), (0.25, 0.62), (0.75, 0.62)], [(0.58, 0.32), (0.58, 0.88)]]


def draw(page) -> str:
    """FOUR drawn on the canvas; the answer shown once the page has it."""
    box = page.locator("#canvas").bounding_box()
    for stroke in FOUR:
        xy = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*xy[0])
        page.mouse.down()
        for point in xy[1:]:
            page.mouse.move(*point, steps=12)
        page.mouse.up()
    page.wait_for_timeout(300)
    page.wait_for_function(
        "document.getElementById('result').getAttribute('aria-busy') === 'false'"
    )
    return f"{page.locator('#digit').text_content()}, {page.locator('#confidence').text_content()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DOCS / "screenshot.png")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    server = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "serve", "--port", str(PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{PORT}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 900, "height": 700},
                                    device_scale_factor=0.65)  # fmt: skip
            page.goto(url + "/")
            page.wait_for_function(
                "document.getElementById('model').textContent.startsWith('model ')"
            )
            answer = draw(page)
            shot = args.out.with_suffix(".tmp.png")
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        Image.open(shot).convert("RGB").quantize(64).save(args.out, optimize=True)
        shot.unlink()
        print(f"{args.out}: {answer}")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
