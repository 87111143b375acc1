"""The page in a real headless Chromium, driven by real pointer events, against the real
server started on a free port."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import encode, free_port, missing_system_package, wait_ready
from digitrec.feedback import FeedbackStore
from digitrec.preprocess import FORMAT_NAMES
from digitrec.runs import shipped_model_path
from strokes import ink_runs, shape, written

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # trains, or runs the CLI, a server or a browser


def ensure_chromium() -> None:
    if not Path(CHROMIUM).exists():
        missing_system_package("Debian's chromium")


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "serve", "--port", str(port),
         "--model-path", str(shipped_model_path())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, server):
    pg = browser.new_page(viewport={"width": 900, "height": 760})
    pg.goto(server + "/")
    pg.wait_for_function("document.getElementById('model').textContent.startsWith('model ')")
    yield pg
    pg.close()


def settle(page) -> None:
    """Wait until the page has the answer to the latest drawing."""
    page.wait_for_timeout(50)
    page.wait_for_function(
        "document.getElementById('result').getAttribute('aria-busy') === 'false'"
    )


def draw_digit(page, digit: np.ndarray) -> None:
    """Trace an MNIST digit with the mouse, one pointer stroke per run of ink, scaled to
    the canvas (the brush is about two MNIST pixels wide)."""
    box = page.locator("#canvas").bounding_box()
    cell = box["width"] / 28
    for r, c0, c1 in ink_runs(digit):
        y = box["y"] + r * cell
        page.mouse.move(box["x"] + c0 * cell, y)
        page.mouse.down()
        page.mouse.move(box["x"] + c1 * cell, y, steps=3)
        page.mouse.up()
    settle(page)


def shown(page) -> str:
    return page.locator("#digit").inner_text().strip()


def test_drawn_mnist_digits_are_recognized(page, mnist):
    rng = np.random.default_rng(0)
    sample = rng.choice(len(mnist.test_images), 12, replace=False)  # 20 took 18 s of the suite
    right = 0
    for i in sample:
        page.keyboard.press("Escape")
        draw_digit(page, mnist.test_images[int(i)].numpy())
        right += shown(page) == str(int(mnist.test_labels[int(i)]))
    assert right >= 10, f"{right}/12 drawn digits recognized"
    bars = page.locator("#bars li")
    assert bars.count() == 10
    assert page.locator("#seen").get_attribute("src").startswith("data:image/png;base64,")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-drawn.png"), full_page=True)


def test_undo_and_clear(page, mnist):
    page.keyboard.press("Escape")
    seven = mnist.test_images[0].numpy()  # a 7
    draw_digit(page, seven)
    before = shown(page)
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + box["height"] - 30)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 20, box["y"] + box["height"] - 30, steps=5)
    page.mouse.up()
    settle(page)
    page.click("#undo")
    settle(page)
    assert shown(page) == before
    page.keyboard.press("Control+z")
    settle(page)
    page.click("#clear")
    assert shown(page) == "?"
    assert "Draw a digit" in page.locator("#confidence").inner_text()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # a dot
    settle(page)
    page.keyboard.press("Escape")
    assert shown(page) == "?"


def test_upload_through_the_file_input(page, mnist, tmp_path):
    digit = mnist.test_images[1].numpy()  # a 2
    photo = tmp_path / "two.jpg"
    Image.fromarray(255 - digit).resize((300, 300)).convert("RGB").save(photo, quality=90)
    page.set_input_files("#file", str(photo))
    settle(page)
    assert shown(page) == "2"
    assert page.locator("#thumbfig").is_visible()
    assert page.locator("#thumbcap").inner_text() == "two.jpg"
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a picture")
    page.set_input_files("#file", str(bad))
    settle(page)
    error = page.locator("#error")
    assert (
        error.is_visible()
        and f"not a readable image ({FORMAT_NAMES} are read)" in error.inner_text()
    )
    assert shown(page) == "?"  # the previous answer is not left beside the error
    assert not page.locator("#thumbfig").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-upload-error.png"), full_page=True)
    text = tmp_path / "notes.txt"
    text.write_text("a shopping list")
    page.set_input_files("#file", str(text))
    assert error.inner_text() == f"notes.txt is not a readable image ({FORMAT_NAMES} are read)"
    assert page.locator("#accepts").inner_text() == f"Pictures: {FORMAT_NAMES}, up to 10 MB."


def on_screen(pg, selector: str, width: int, height: int) -> bool:
    b = pg.locator(selector).bounding_box()
    return (
        b["x"] >= 0
        and b["y"] >= 0
        and b["x"] + b["width"] <= width
        and b["y"] + b["height"] <= height
    )


def test_a_phone_in_portrait_and_landscape_sees_pad_buttons_and_answer_and_takes_photos(
    browser, server, mnist, tmp_path
):
    """On a 390x844 phone and turned to 844x390: the pad, its buttons, the answer and its
    bars all on screen without scrolling; touch hints; a photo from the camera input is
    read."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from variants import phone_photo

    photo = tmp_path / "IMG_0001.jpg"
    photo.write_bytes(phone_photo(mnist.test_images[0].numpy(), np.random.default_rng(0)))  # a 7
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True,
                                  is_mobile=True)  # fmt: skip
    pg = context.new_page()
    pg.goto(server + "/")
    touch_action = "getComputedStyle(document.getElementById('canvas')).touchAction"
    assert pg.evaluate(touch_action) == "none"
    assert pg.locator(".touch-only.hint").is_visible() and pg.locator(".mouse-only").is_hidden()
    camera = pg.locator("#camera")
    assert camera.get_attribute("capture") == "environment"
    assert pg.locator("#file").get_attribute("accept") == "image/*"
    camera.set_input_files(str(photo))
    settle(pg)
    assert shown(pg) == "7", pg.locator("#confidence").inner_text()
    for w, h, name in ((390, 844, "web-phone"), (844, 390, "web-phone-landscape")):
        pg.set_viewport_size({"width": w, "height": h})
        pg.wait_for_timeout(300)
        settle(pg)
        for part in ("#canvas", "#undo", "#clear", "label:has(#camera)", "#digit", "#bars"):
            assert on_screen(pg, part, w, h), (name, part)
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    context.close()


def trace(page, digit: np.ndarray, left: float, top: float, cell: float) -> None:
    """``digit`` traced with the mouse, one stroke per run of ink, its 28x28 grid placed at
    (left, top) page pixels, ``cell`` pixels a grid pixel."""
    for r, c0, c1 in ink_runs(digit):
        page.mouse.move(left + c0 * cell, top + r * cell)
        page.mouse.down()
        page.mouse.move(left + c1 * cell, top + r * cell, steps=3)
        page.mouse.up()


def pen(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Strokes (page pixels) drawn with the mouse."""
    for stroke in strokes:
        page.mouse.move(*stroke[0])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(x, y, steps=6)
        page.mouse.up()


def write(page, text: str, left: float, top: float, size: float) -> None:
    """``text`` written with the mouse, each character ``size`` px tall."""
    pen(page, written(text, left, top, size))


def test_a_digit_drawn_small_reads_as_sure_as_a_big_one(page):
    """A 5 written 40 px tall on the pad, with the page's fat pen a blob on screen, is read
    with a pen scaled to it: the right digit, not "not sure"."""
    box = page.locator("#canvas").bounding_box()
    for size in (40, 200):
        page.keyboard.press("Escape")
        write(page, "5", box["x"] + 0.3 * box["width"], box["y"] + 0.15 * box["height"], size)
        settle(page)
        if size == 40:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web-small.png"), full_page=True)
        assert shown(page) == "5" and "unsure" not in page.locator("#digit").get_attribute(
            "class"
        ), (size, page.locator("#confidence").inner_text())
    page.keyboard.press("Escape")


def test_a_one_or_seven_is_not_sure_and_names_the_two_likeliest_digits(page):
    """Under the model's measured threshold the page says so, with the top two."""
    page.keyboard.press("Escape")
    box = page.locator("#canvas").bounding_box()
    pen(page, shape("1 or 7", box["x"], box["y"], box["width"]))
    settle(page)
    status = page.locator("#status").inner_text()
    assert "unsure" in page.locator("#digit").get_attribute("class"), status
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-not-sure.png"), full_page=True)
    two = r"Not sure: 7 \(\d+%\) or 1 \(\d+%\)\. Try drawing it bigger or clearer\."
    assert re.fullmatch(two, status), status
    page.keyboard.press("Escape")


def test_a_scribble_is_not_a_digit_and_a_digit_drawn_next_is_read(page):
    page.keyboard.press("Escape")
    box = page.locator("#canvas").bounding_box()
    pen(page, shape("scribble", box["x"], box["y"], box["width"]))
    settle(page)
    assert shown(page) == "×" and page.locator("#confidence").inner_text() == "Not a digit"
    assert "none of 0-9" in page.locator("#status").inner_text()
    assert page.locator("#several").is_hidden()  # the reader is not sure of a number either
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-not-a-digit.png"), full_page=True)
    page.keyboard.press("Escape")
    write(page, "4", box["x"] + 0.3 * box["width"], box["y"] + 0.15 * box["height"],
          0.6 * box["height"])  # fmt: skip
    settle(page)
    assert shown(page) == "4" and page.locator("#confidence").inner_text().endswith("% sure")
    page.keyboard.press("Escape")


def test_a_misread_one_is_corrected_on_the_page_and_kept_in_the_store(page):
    """The European 1 with its long flag, read as a 7: "Wrong? It is a 1" keeps it, with
    what the model said, in the store the server writes to (the tests' private home)."""
    store = FeedbackStore()
    page.keyboard.press("Escape")
    assert page.locator("#feedback").is_hidden()
    box = page.locator("#canvas").bounding_box()
    pen(page, shape("1 or 7", box["x"], box["y"], box["width"]))
    settle(page)
    assert shown(page) == "7"
    page.locator("#fbdigits button", has_text="1").click()
    said = page.locator("#fbsaid")
    said.filter(has_text="Thanks").wait_for()
    assert re.fullmatch(r"Thanks: kept as a 1 \(#\d+\)\. digitrec learns from corrections\.",
                        said.inner_text())  # fmt: skip
    record = store.get(int(re.search(r"#(\d+)", said.inner_text())[1]))
    assert (record.label, record.predicted, record.source) == (1, 7, "web")
    assert record.original and record.original.startswith(b"\x89PNG")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-correction.png"), full_page=True)


def test_a_server_that_forgot_the_answer_is_sent_the_drawing_with_the_confirmation(page):
    """A restarted server (or another worker) no longer knows the prediction_id: the page
    sends the drawing itself, and the answer it confirms is kept."""
    forgotten: list[str] = []

    def forget(route):
        if route.request.headers.get("content-type", "").startswith("application/json"):
            forgotten.append(route.request.post_data or "")
            route.fulfill(status=404, json={"detail": "no recent answer"})
        else:
            route.continue_()

    page.keyboard.press("Escape")
    box = page.locator("#canvas").bounding_box()
    write(page, "4", box["x"] + 0.3 * box["width"], box["y"] + 0.15 * box["height"],
          0.6 * box["height"])  # fmt: skip
    settle(page)
    assert shown(page) == "4"
    page.route("**/api/feedback", forget)
    try:
        page.locator("#fbright").click()
        page.locator("#fbsaid").filter(has_text="Thanks").wait_for()
    finally:
        page.unroute("**/api/feedback")
    assert len(forgotten) == 1 and '"label":4' in forgotten[0]
    assert "kept as a right answer" in page.locator("#fbsaid").inner_text()
    record = FeedbackStore().records()[-1]
    assert (record.label, record.predicted, record.source) == (4, 4, "web")
    page.keyboard.press("Escape")
    assert page.locator("#feedback").is_hidden()


def test_number_mode_reads_a_drawn_number_and_boxes_each_digit(page, tmp_path):
    page.click("text=A number")
    box = page.locator("#canvas").bounding_box()
    assert box["width"] > 2.5 * box["height"]  # a wide canvas for a number
    write(page, "42", box["x"] + box["width"] * 0.3, box["y"] + 0.2 * box["height"],
          0.6 * box["height"])  # fmt: skip
    settle(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-number.png"), full_page=True)
    assert page.locator("#number").inner_text() == "42"
    assert page.locator("#chars li").count() == 2
    assert not page.locator("#bars").is_visible()  # the single-digit answer is hidden
    page.locator("#overlay").screenshot(path=str(tmp_path / "overlay.png"))
    drawn = np.asarray(Image.open(tmp_path / "overlay.png").convert("RGB"), np.int16)
    blue = (drawn[..., 2] > 180) & (drawn[..., 0] < 90)  # the boxes' colour over the ink
    assert blue.sum() > 100, "no box drawn over the digits"
    page.keyboard.press("Escape")
    assert page.locator("#number").inner_text() == "?"


def test_number_mode_reads_an_uploaded_photo_of_a_number(page, glyphs, tmp_path):
    from conftest import compose

    img, _ = compose(glyphs, ["2026"])
    path = tmp_path / "year.jpg"
    img.convert("RGB").save(path, quality=90)
    if page.locator("#numberanswer").is_hidden():
        page.click("text=A number")
    page.set_input_files("#file", str(path))
    settle(page)
    assert page.locator("#number").inner_text() == "2026"
    assert not page.locator("#thumbfig").is_visible()  # the photo is on the canvas instead
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-number-photo.png"), full_page=True)
    page.click("text=One digit")
    assert page.locator("#digit").is_visible() and page.locator("#number").is_hidden()


# ------------------------------------------------- the page as a newcomer uses it

INK = """() => {  // the canvas's inked pixels: how many, and their box in canvas units
  const c = document.getElementById('canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const paper = [d[0], d[1], d[2]];
  let n = 0, x0 = 1e9, y0 = 1e9, x1 = -1, y1 = -1;
  for (let i = 0; i < d.length; i += 4) {
    const away = Math.abs(d[i] - paper[0]) + Math.abs(d[i + 1] - paper[1]);
    if (away + Math.abs(d[i + 2] - paper[2]) < 200) continue;
    const x = (i / 4) % c.width, y = Math.floor(i / 4 / c.width);
    n++; x0 = Math.min(x0, x); x1 = Math.max(x1, x);
    y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  return { n, box: [x0 / c.width, y0 / c.height, x1 / c.width, y1 / c.height] };
}"""


def four(page, left: float = 0.3, top: float = 0.15, size: float = 0.6) -> None:
    box = page.locator("#canvas").bounding_box()
    write(page, "4", box["x"] + left * box["width"], box["y"] + top * box["height"],
          size * box["height"])  # fmt: skip
    settle(page)


def test_a_drawing_survives_resizes_scaled_and_is_answered_as_shown(page):
    """1280 -> 320 px wide and back: the strokes are redrawn scaled, never cropped, and
    the answer is the drawing's."""
    page.keyboard.press("Escape")
    page.set_viewport_size({"width": 1280, "height": 800})
    four(page)
    wide = page.evaluate(INK)
    page.set_viewport_size({"width": 320, "height": 640})
    page.wait_for_timeout(300)  # the answer again once the size settles
    settle(page)
    narrow = page.evaluate(INK)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-narrow.png"), full_page=True)
    assert np.allclose(wide["box"], narrow["box"], atol=0.03), (wide, narrow)
    assert shown(page) == "4"
    page.set_viewport_size({"width": 900, "height": 760})
    page.wait_for_timeout(300)
    settle(page)
    assert np.allclose(page.evaluate(INK)["box"], wide["box"], atol=0.03) and shown(page) == "4"
    page.keyboard.press("Escape")


def test_redo_brings_back_what_undo_took_by_key_and_by_button(page):
    page.keyboard.press("Escape")
    four(page)
    whole = page.evaluate(INK)["n"]
    assert page.locator("#redo").is_disabled()
    page.keyboard.press("Control+z")  # the 4's stem
    settle(page)
    assert page.evaluate(INK)["n"] < whole and not page.locator("#redo").is_disabled()
    page.keyboard.press("Control+Shift+Z")
    settle(page)
    assert page.evaluate(INK)["n"] == whole and shown(page) == "4"
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+y")
    settle(page)
    assert page.evaluate(INK)["n"] == whole
    page.click("#clear")
    assert shown(page) == "?" and page.evaluate(INK)["n"] == 0
    page.click("#undo")  # a clear is undone too: nothing is lost
    settle(page)
    assert page.evaluate(INK)["n"] == whole and shown(page) == "4"
    page.click("#redo")
    assert shown(page) == "?" and page.locator("#redo").is_disabled()


def test_the_pen_width_changes_the_look_not_the_answer(page):
    seen = {}
    for width in ("Thin", "Thick", "Normal"):
        page.keyboard.press("Escape")
        page.click(f".pens >> text={width}")
        four(page)
        seen[width] = (
            page.evaluate(INK)["n"],
            shown(page),
            page.locator("#seen").get_attribute("src"),
        )
    assert seen["Thick"][0] > 2 * seen["Thin"][0]  # thick and thin on screen
    assert seen["Thin"][1:] == seen["Thick"][1:] == seen["Normal"][1:]  # the same 28x28, the same 4
    page.keyboard.press("Escape")


def test_the_eraser_rubs_out_part_of_a_stroke_and_undo_brings_it_back(page):
    """A 7 (a bar and a slanted stem) loses its bar to the eraser and reads as a 1."""
    page.keyboard.press("Escape")
    b = page.locator("#canvas").bounding_box()
    at = lambda x, y: (b["x"] + x * b["width"], b["y"] + y * b["height"])  # noqa: E731
    pen(page, [[at(0.3, 0.15), at(0.7, 0.15), at(0.45, 0.9)]])
    settle(page)
    assert shown(page) == "7"
    page.click(".pens >> text=Eraser")
    pen(page, [[at(0.25, 0.15), at(0.6, 0.15)]])
    settle(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-erased.png"), full_page=True)
    assert shown(page) == "1", page.locator("#confidence").inner_text()
    page.keyboard.press("Control+z")
    settle(page)
    assert shown(page) == "7"
    page.click(".pens >> text=Normal")
    page.keyboard.press("Escape")


def test_every_example_is_read_as_named(page, server):
    import json
    import urllib.request

    listed = json.loads(urllib.request.urlopen(server + "/static/examples/examples.json").read())
    assert {e["mode"] for e in listed} == {"digit", "number"} and len(listed) >= 4
    for i, example in enumerate(listed):
        page.locator("#examplelist button").nth(i).click()
        settle(page)
        answer = "#number" if example["mode"] == "number" else "#digit"
        assert page.locator(answer).inner_text() == example["expect"], example
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-example.png"), full_page=True)
    page.click("text=One digit")
    page.keyboard.press("Escape")


def test_undo_and_clear_after_an_upload_leave_one_state(page, mnist, tmp_path):
    """A drawing, then an upload: undo shows the drawing and its answer, no thumbnail;
    redo the upload and its answer; clear nothing at all."""
    path = tmp_path / ("a-very-long-file-name-from-a-phone-" + "x" * 90 + ".png")
    Image.fromarray(255 - mnist.test_images[1].numpy()).resize((140, 140)).save(path)  # a 2
    page.keyboard.press("Escape")
    four(page)
    page.set_input_files("#file", str(path))
    settle(page)
    cap = page.locator("#thumbcap")
    assert shown(page) == "2" and page.evaluate(INK)["n"] == 0 and cap.is_visible()
    assert cap.get_attribute("title") == path.name  # ellipsized, whole on hover
    assert cap.evaluate("e => e.scrollWidth > e.clientWidth")
    result = page.locator("#result").bounding_box()
    assert cap.bounding_box()["x"] + cap.bounding_box()["width"] <= result["x"] + result["width"]
    page.click("#undo")
    settle(page)
    assert shown(page) == "4" and page.evaluate(INK)["n"] > 0 and not cap.is_visible()
    page.keyboard.press("Control+Shift+Z")
    settle(page)
    assert shown(page) == "2" and cap.is_visible()
    page.keyboard.press("Escape")
    assert shown(page) == "?" and not cap.is_visible() and page.locator("#error").is_hidden()


def test_a_picture_dropped_anywhere_on_the_page_is_read_in_place(page, mnist):
    import base64

    png = base64.b64encode(encode(255 - mnist.test_images[1].numpy())).decode()
    url = page.url
    transfer = page.evaluate_handle("""(b64) => {
        const dt = new DataTransfer();
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        dt.items.add(new File([bytes], 'two.png', { type: 'image/png' }));
        return dt;
    }""", png)  # fmt: skip
    page.dispatch_event("footer", "dragenter", {"dataTransfer": transfer})
    assert "dragover" in page.evaluate("document.body.className")
    page.dispatch_event("footer", "drop", {"dataTransfer": transfer})
    settle(page)
    assert page.url == url and shown(page) == "2"
    assert "dragover" not in page.evaluate("document.body.className")
    page.keyboard.press("Escape")


def test_a_number_in_one_digit_mode_is_said_and_read_as_a_number_on_request(page, glyphs, tmp_path):
    from conftest import compose

    img, _ = compose(glyphs, ["305"])
    img.save(tmp_path / "305.png")
    page.set_input_files("#file", str(tmp_path / "305.png"))
    settle(page)
    several = page.locator("#several")
    several.wait_for()
    assert "3 digits (305)" in several.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-several.png"), full_page=True)
    page.click("#asnumber")
    settle(page)
    assert page.locator("#number").inner_text() == "305"
    page.click("text=One digit")
    page.keyboard.press("Escape")
    four(page)
    assert several.is_hidden()  # a sure digit is not asked again
    page.keyboard.press("Escape")


def test_dark_mode_and_no_missing_files(browser, server):
    context = browser.new_context(viewport={"width": 900, "height": 760}, color_scheme="dark")
    pg = context.new_page()
    missing = []
    pg.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    pg.goto(server + "/")
    pg.wait_for_function("document.getElementById('model').textContent.startsWith('model ')")
    four(pg)
    assert shown(pg) == "4"
    light = (
        "(s) => parseInt(getComputedStyle(document.querySelector(s)).backgroundColor.split(',')[1])"
    )
    assert pg.evaluate(light, "body") < 60  # a dark page
    corner = "document.getElementById('canvas').getContext('2d').getImageData(1, 1, 1, 1).data"
    paper = pg.evaluate(f"Array.from({corner})")
    assert max(paper[:3]) < 60  # dark paper, light ink, and still read
    icon = pg.evaluate("document.querySelector('link[rel=icon]').href")
    assert pg.request.get(icon).ok and not missing, missing
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "web-dark.png"), full_page=True)
    context.close()
