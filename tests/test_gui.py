"""The desktop app: its logic without a screen, then real windows under Xvfb, driven by
Tk events in-process and by xdotool mouse drags against `digitrec gui` itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose, missing_system_package
from digitrec.checkpoint import save_model
from digitrec.errors import CheckpointError
from digitrec.gui import BRUSH, NUMBER_ASPECT, Drawing, Session, describe, title_for
from digitrec.models import build_model
from digitrec.predictor import Predictor
from digitrec.runs import shipped_model_path
from strokes import ink_runs, shape, written

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"


def traced(digit: np.ndarray) -> Drawing:
    """An MNIST digit as strokes on a drawing, the way the tests' pointer traces it."""
    d = Drawing()
    for r, c0, c1 in ink_runs(digit):
        d.begin((c0 / 28, r / 28))
        d.extend((c1 / 28, r / 28))
    return d


@pytest.fixture(scope="module")
def session() -> Session:
    return Session(Predictor.load(shipped_model_path()))


# ------------------------------------------------------------------ without a screen


def test_drawing_renders_round_strokes_and_undoes():
    d = Drawing()
    assert d.empty and (np.asarray(d.render(100)) == 255).all()
    d.begin((0.2, 0.5))
    d.extend((0.8, 0.5))
    a = np.asarray(d.render(280)) < 128
    rows = np.flatnonzero(a[:, 140])
    assert abs(len(rows) - 280 * BRUSH) <= 2 and abs(rows.mean() - 140) <= 1
    cols = np.flatnonzero(a[140])
    assert cols[0] < 0.2 * 280 - 5 and cols[-1] > 0.8 * 280 + 5  # round caps past the ends
    snapshot = d.copy()
    d.begin((0.5, 0.1))
    assert len(d.strokes) == 2 and len(snapshot.strokes) == 1
    assert d.undo() and len(d.strokes) == 1
    d.clear()
    assert d.empty and not d.undo()


def test_a_traced_digit_is_recognized_at_any_canvas_size(session, mnist):
    for i in range(5):
        digit, label = mnist.test_images[i].numpy(), int(mnist.test_labels[i])
        for side in (280, 560):
            pred = session.predict(traced(digit).render(side))
            assert pred.digit == label, (i, side)


def test_a_digit_drawn_small_is_read_with_a_pen_its_size(session):
    """Written 40 px tall on the 280 px pad, the screen's 20 px pen makes a blob of a 3 or
    a 5; it is read with a pen scaled to the drawing: as sure as drawn full size."""
    for ch in "35":
        small, full = Drawing(), Drawing()
        for d, size in ((small, 40 / 280), (full, 200 / 280)):
            for stroke in written(ch, 0.2, 0.1, size):
                d.begin(stroke[0])
                for p in stroke[1:]:
                    d.extend(p)
        ink = np.asarray(small.render(280, read=True)) < 128
        assert ink.sum() < 0.5 * (np.asarray(small.render(280)) < 128).sum()  # a thinner pen
        s, f = session.predict(small.render(280, read=True)), session.predict(full.render(280))
        assert s.label == f.label == ch and not s.uncertain and s.confidence > f.confidence - 0.05


def test_what_the_window_says(session):
    blank = session.predict(Drawing().render())
    digits = session.predictor.classes
    assert blank.blank and describe(blank, digits)[1].startswith("no digit")
    assert title_for(blank) == "digitrec: no digit" and title_for(None) == "digitrec"
    d = Drawing()
    d.begin((0.3, 0.3))
    d.extend((0.32, 0.33))  # a dot: something, but not a digit
    dot = session.predict(d.render())
    assert dot.not_a_digit and dot.digit is None and dot.uncertain
    assert describe(dot, digits) == ("×", "not a digit: draw one digit, 0 to 9")
    assert title_for(dot) == "digitrec: not a digit"
    pred = replace(dot, not_a_digit=False, digit=4, label="4")
    sure = replace(pred, uncertain=False, confidence=0.97)
    probs = [0.0] * 10
    probs[4], probs[9], probs[7] = 0.55, 0.4, 0.05
    unsure = replace(pred, uncertain=True, confidence=0.55, probabilities=probs)
    assert describe(sure, digits) == ("4", "97.0% sure") and title_for(sure) == "digitrec: 4"
    assert describe(unsure, digits) == ("4", "not sure: 4 (55%) or 9 (40%)")
    assert title_for(unsure) == "digitrec: 4 (not sure)"


def test_switching_models_and_keeping_the_old_one_on_errors(session, tmp_path):
    s = Session(session.predictor)
    assert s.status().startswith("model best") and "accuracy 99." in s.status()
    other = tmp_path / "fast.safetensors"
    save_model(other, build_model("fast"), {"model": "fast", "metrics": {"val_acc": 0.25}})
    assert "model fast · fast.safetensors · validation accuracy 25.00%" in s.load_model(other)
    kept = s.predictor
    wrong = tmp_path / "wrong.safetensors"
    save_model(wrong, build_model("fast"), {"model": "cnn"})
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    for path, words in (
        (tmp_path / "missing.safetensors", "no checkpoint"),
        (corrupt, "not a readable safetensors"),
        (wrong, "does not match the architecture"),
    ):
        with pytest.raises(CheckpointError, match=words):
            s.load_model(path)
        assert s.predictor is kept


@pytest.mark.slow
def test_a_number_written_on_a_wide_drawing_is_read(session, glyphs):
    d = Drawing(NUMBER_ASPECT)
    for stroke in written("42", 1.0, 0.2, 0.6):  # in units of the canvas's height
        d.begin(stroke[0])
        for p in stroke[1:]:
            d.extend(p)
    img = d.render(200)
    assert img.size == (600, 200)
    r = session.read(img)
    assert r.text == "42" and title_for(r) == "digitrec: 42"
    assert title_for(session.read(Image.new("L", (600, 200), 255))) == "digitrec: no digits"
    assert session.read(compose(glyphs, ["31", "415"])[0]).text == "31\n415"


def test_without_tkinter_the_command_says_how_to_install_it(tmp_path):
    blocker = tmp_path / "tkinter.py"
    blocker.write_text("raise ImportError('No module named _tkinter')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run(
        [sys.executable, "-m", "digitrec", "gui", "--model-path", str(shipped_model_path())],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    assert "sudo apt install python3-tk" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_without_a_display_the_command_says_what_to_do():
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    r = subprocess.run(
        [sys.executable, "-m", "digitrec", "gui", "--model-path", str(shipped_model_path())],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "Cannot open a window" in r.stderr
    assert "digitrec serve" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ real windows


def ensure(*tools: str) -> None:
    if not all(shutil.which(t) for t in tools):
        missing_system_package(f"{', '.join(tools)} (Debian: xvfb xdotool x11-utils)")


@pytest.fixture(scope="module")
def display():
    """A virtual X screen of our own, on the first free display number."""
    ensure("Xvfb", "xdotool", "xwininfo")
    n = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 20
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if time.time() > deadline or proc.poll() is not None:
            pytest.fail("Xvfb did not start")
        time.sleep(0.1)
    yield f":{n}"
    proc.terminate()
    proc.wait(timeout=10)


def screenshot(display: str, name: str, box: tuple[int, int, int, int]) -> Path:
    from PIL import ImageGrab

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    ImageGrab.grab(xdisplay=display).crop(box).save(path)
    return path


@pytest.fixture
def app(display, session):
    import tkinter as tk

    from digitrec.gui import App

    root = tk.Tk(screenName=display, className="digitrec")
    root.geometry("820x620+0+0")
    a = App(root, session)
    root.update()
    yield a
    root.destroy()


def wait_for(app, condition, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError("the window did not update in time")
        app.root.update()
        time.sleep(0.01)


def draw_with_events(app, digit: np.ndarray) -> None:
    """Press, drag and release on the canvas widget, as the mouse would."""
    side = app.side
    for r, c0, c1 in ink_runs(digit):
        y = round(r / 28 * side)
        app.canvas.event_generate("<ButtonPress-1>", x=round(c0 / 28 * side), y=y)
        for t in (0.33, 0.66, 1.0):
            x = round((c0 + t * (c1 - c0)) / 28 * side)
            app.canvas.event_generate("<B1-Motion>", x=x, y=y, state=0x100)
        app.canvas.event_generate("<ButtonRelease-1>", x=round(c1 / 28 * side), y=y)
    app.root.update()


def settled(app):
    """The answer to the finished drawing (live predictions arrive on the way)."""
    wait_for(app, lambda: app.worker.idle and app.prediction is not None)
    return app.prediction


@pytest.mark.slow
def test_drawing_in_the_window_recognizes_real_digits(app, mnist, display):
    rng = np.random.default_rng(1)
    sample = rng.choice(len(mnist.test_images), 20, replace=False)
    right = 0
    for i in sample:
        app.clear()
        digit = mnist.test_images[int(i)].numpy()
        draw_with_events(app, digit)
        pred = settled(app)
        right += pred.digit == int(mnist.test_labels[int(i)])
        assert app.digit.cget("text") == pred.label
    assert right >= 17, f"{right}/20 drawn digits recognized"
    assert app.root.title().startswith("digitrec: ")
    screenshot(display, "gui-drawn.png", (0, 0, 820, 620))


@pytest.mark.slow
def test_undo_clear_open_save_and_a_bad_model(app, mnist, tmp_path, display):
    digit = mnist.test_images[0].numpy()
    draw_with_events(app, digit)
    settled(app)
    strokes = len(app.drawing.strokes)
    app.root.event_generate("<Control-z>")
    app.root.update()
    assert len(app.drawing.strokes) == strokes - 1
    app.save_drawing(tmp_path / "drawing.png")
    saved = Image.open(tmp_path / "drawing.png")
    assert saved.size == (app.side, app.side) and np.asarray(saved).min() == 0
    app.root.event_generate("<Escape>")
    app.root.update()
    assert app.drawing.empty and app.prediction is None and app.root.title() == "digitrec"
    assert not app.canvas.find_all()
    app.save_drawing(tmp_path / "blank.png")
    assert "canvas is blank" in app.message.cget("text")
    assert not (tmp_path / "blank.png").exists()

    photo = tmp_path / "three.png"
    Image.fromarray(255 - mnist.test_images[18].numpy()).resize((200, 200)).save(photo)
    app.open_image(photo)
    wait_for(app, lambda: app.prediction is not None)
    assert app.prediction.digit == int(mnist.test_labels[18]) == 3
    assert "three.png" in app.thumb.cget("text")

    # A phone's portrait photo, stored sideways with an EXIF tag: its thumbnail stands up.
    portrait = Image.fromarray(np.full((300, 200), 230, np.uint8)).transpose(
        Image.Transpose.ROTATE_90
    )
    exif = Image.Exif()
    exif[0x0112] = 6
    portrait.save(tmp_path / "portrait.jpg", exif=exif.tobytes())
    app.open_image(tmp_path / "portrait.jpg")
    wait_for(app, lambda: "portrait.jpg" in app.thumb.cget("text"))
    thumb = app._images["thumb"]
    assert (thumb.width(), thumb.height()) == (64, 96)
    # Whole, inside the 820x620 window (stacked under the model's view, it was cut off).
    bottom = app.thumb.winfo_rooty() + app.thumb.winfo_height()
    assert bottom <= app.root.winfo_rooty() + app.root.winfo_height() - 40, bottom
    long_name = tmp_path / "IMG_20261123_174512_from_the_phone_gallery.jpg"
    (tmp_path / "portrait.jpg").rename(long_name)
    app.open_image(long_name)
    wait_for(app, lambda: "gallery.jpg" in app.thumb.cget("text"))
    assert app.thumb.cget("text") == "opened: IMG_202611…_gallery.jpg"
    assert app.thumb.winfo_reqwidth() <= 140
    app.root.update()
    screenshot(display, "gui-opened.png", (0, 0, 820, 620))

    (tmp_path / "junk.png").write_bytes(b"not an image")
    app.open_image(tmp_path / "junk.png")
    wait_for(app, lambda: "not a readable image" in app.message.cget("text"))
    app.root.event_generate("<Escape>")  # clears the answer, its image and the error line
    app.root.update()
    assert (app.message.cget("text"), app.thumb.cget("text"), app.prediction) == ("", "", None)
    assert [str(i) for i in app.seen.cget("image")] == [str(app._images["empty"])]

    status = app.status.cget("text")
    app.load_model(tmp_path / "missing.safetensors")
    wait_for(app, lambda: "previous model stays loaded" in app.message.cget("text"))
    assert app.status.cget("text") == status


@pytest.mark.slow
def test_an_answer_to_a_drawing_cleared_since_is_not_shown(app, mnist):
    app.drawing = traced(mnist.test_images[0].numpy())
    app.predict_drawing()
    app.clear()  # before the UI thread can show the answer, whenever the worker ends
    wait_for(app, lambda: app.worker.idle)
    app.root.update()
    assert app.prediction is None and app.root.title() == "digitrec"
    assert app.digit.cget("text") == "?"


def write_with_events(app, text: str) -> None:
    """``text`` written on the canvas widget with press, drag and release events."""
    side = app.side
    for stroke in written(text, 0.35 * side * NUMBER_ASPECT, 0.2 * side, 0.6 * side):
        (x, y), *rest = stroke
        app.canvas.event_generate("<ButtonPress-1>", x=round(x), y=round(y))
        for (xa, ya), (xb, yb) in pairwise([(x, y), *rest]):
            for t in (0.33, 0.66, 1.0):
                px, py = round(xa + t * (xb - xa)), round(ya + t * (yb - ya))
                app.canvas.event_generate("<B1-Motion>", x=px, y=py, state=0x100)
        app.canvas.event_generate("<ButtonRelease-1>", x=round(rest[-1][0]), y=round(rest[-1][1]))
    app.root.update()


@pytest.mark.slow
def test_number_mode_in_the_window(app, glyphs, tmp_path, display):
    app.root.nametowidget("side.modes.number").invoke()
    app.root.update()
    width, height = int(app.canvas.cget("width")), app.side
    assert width == round(NUMBER_ASPECT * height) and height >= 120
    write_with_events(app, "42")
    wait_for(app, lambda: app.worker.idle and app.reading is not None)
    assert app.reading.text == "42" and app.digit.cget("text") == "42"
    assert app.root.title() == "digitrec: 42" and not app.bars.winfo_ismapped()
    boxes = [i for i in app.canvas.find_withtag("boxes") if app.canvas.type(i) == "rectangle"]
    assert len(boxes) == 2
    (x0, _, x1, _), (x2, _, _, _) = (app.canvas.coords(b) for b in boxes)
    assert x0 < x1 < x2  # the 4's box, then the 2's
    screenshot(display, "gui-number.png", (0, 0, 820, 620))
    path = tmp_path / "year.png"
    compose(glyphs, ["2026"])[0].save(path)
    app.open_image(path)
    wait_for(app, lambda: app.worker.idle and app.reading and app.reading.text != "42")
    assert app.reading.text == "2026" and app.photo is not None and app.drawing.empty
    assert len([i for i in app.canvas.find_withtag("boxes") if app.canvas.type(i) == "text"]) == 4
    screenshot(display, "gui-number-photo.png", (0, 0, 820, 620))
    app.root.event_generate("<Escape>")
    app.root.update()
    assert app.reading is None and app.photo is None and not app.canvas.find_all()
    app.root.nametowidget("side.modes.digit").invoke()
    app.root.update()
    assert int(app.canvas.cget("width")) == app.side and app.bars.winfo_ismapped()


def click(app, display: str, widget) -> None:
    """A real mouse click (xdotool on the X server) in the middle of ``widget``."""
    app.root.update()
    x = widget.winfo_rootx() + widget.winfo_width() // 2
    y = widget.winfo_rooty() + widget.winfo_height() // 2
    env = {**os.environ, "DISPLAY": display}
    subprocess.run(["xdotool", "mousemove", str(x), str(y), "click", "1"], env=env, check=True)


@pytest.mark.slow
def test_a_drawing_is_corrected_in_the_window_and_an_opened_image_confirmed(
    app, mnist, tmp_path, display
):
    store = app.session.store
    assert str(app.fix_buttons[1].cget("state")) == "disabled"  # nothing to correct yet
    for (x, y), *rest in shape("1 or 7", 0, 0, app.side):
        app.canvas.event_generate("<ButtonPress-1>", x=round(x), y=round(y))
        for px, py in rest:
            app.canvas.event_generate("<B1-Motion>", x=round(px), y=round(py), state=0x100)
        app.canvas.event_generate("<ButtonRelease-1>", x=round(px), y=round(py))
    said = settled(app).digit
    assert said in (1, 7)  # a 1 with a long flag: the window reads it as either
    other = 8 - said
    click(app, display, app.fix_buttons[other])
    wait_for(app, lambda: app.message.cget("text").startswith("kept"))
    message = app.message.cget("text")
    assert re.fullmatch(rf"kept as a {other} \(#\d+\): digitrec learns from corrections", message)
    record = store.get(int(re.search(r"#(\d+)", message)[1]))
    assert (record.label, record.predicted, record.source) == (other, said, "gui")
    assert (
        record.original.startswith(b"\x89PNG")
        and record.model_sha256 == app.session.predictor.sha256
    )
    screenshot(display, "gui-correction.png", (0, 0, 820, 620))
    path = tmp_path / "three.png"
    i = int((mnist.test_labels == 3).nonzero()[0][0])
    Image.fromarray(255 - mnist.test_images[i].numpy()).resize((140, 140)).save(path)
    app.open_image(path)
    wait_for(app, lambda: app.worker.idle and app.prediction.digit == 3)
    click(app, display, app.right)
    wait_for(app, lambda: app.message.cget("text").startswith("kept as a right"))
    record = store.records()[-1]
    assert (record.label, record.predicted) == (3, 3) and record.original == path.read_bytes()
    app.clear()
    assert str(app.right.cget("state")) == "disabled" and app.answered is None


@pytest.mark.slow
def test_digitrec_gui_in_a_real_window_with_xdotool(display, mnist, tmp_path):
    """`digitrec gui IMAGE` as a user starts it; the mouse is moved by xdotool."""
    env = {**os.environ, "DISPLAY": display}

    def x(*args: str) -> str:
        return subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout

    photo = tmp_path / "seven.png"
    Image.fromarray(mnist.test_images[0].numpy()).resize((150, 150)).save(photo)  # a 7
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "gui", str(photo),
         "--model-path", str(shipped_model_path())],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        win = x("xdotool", "search", "--sync", "--name", "^digitrec").split()[0]

        def title(want: str, timeout: float = 30, steady: float = 0.0) -> str:
            """The window title once it matches ``want`` and has not changed for ``steady``
            seconds (live predictions come and go while a digit is drawn)."""
            deadline, last, since = time.time() + timeout, None, time.time()
            while time.time() < deadline:
                name = x("xdotool", "getwindowname", win).strip()
                if name != last:
                    last, since = name, time.time()
                if re.fullmatch(want, name) and time.time() - since >= steady:
                    return name
                time.sleep(0.05)
            raise AssertionError(f"window title {last!r}, wanted {want!r}")

        title(r"digitrec: 7")  # the image given on the command line, opened at start
        # The canvas is the window's largest square child window.
        tree = x("xwininfo", "-tree", "-id", win)
        geoms = re.findall(r"(\d+)x(\d+)[+-]-?\d+[+-]-?\d+\s+\+(-?\d+)\+(-?\d+)", tree)
        side, cx, cy = max((int(w), int(ax), int(ay)) for w, h, ax, ay in geoms if w == h)
        assert side >= 280
        rng = np.random.default_rng(2)
        right = 0
        for i in rng.choice(len(mnist.test_images), 6, replace=False):
            digit = mnist.test_images[int(i)].numpy()
            x("xdotool", "key", "--window", win, "Escape")
            title("digitrec")
            cmd = ["xdotool"]
            for r, c0, c1 in ink_runs(digit):
                y = str(round(cy + r / 28 * side))
                cmd += ["mousemove", str(round(cx + c0 / 28 * side)), y, "mousedown", "1"]
                for t in (0.33, 0.66, 1.0):
                    cmd += ["mousemove", str(round(cx + (c0 + t * (c1 - c0)) / 28 * side)), y]
                cmd += ["mouseup", "1"]
            x(*cmd)
            shown = title(r"digitrec: .*", steady=0.6)
            right += shown == f"digitrec: {int(mnist.test_labels[int(i)])}"
        assert right >= 5, f"{right}/6 digits drawn with xdotool recognized"
        geo = x("xdotool", "getwindowgeometry", win)
        w, h = map(int, re.search(r"Geometry: (\d+)x(\d+)", geo).groups())
        shot = screenshot(display, "gui-window.png", (0, 0, w, h))
        assert np.asarray(Image.open(shot)).std() > 10  # a window, not an empty screen
        x("xdotool", "key", "--window", win, "Escape")
        title("digitrec")
        cmd = ["xdotool"]
        for stroke in shape("scribble", cx, cy, side):
            cmd += ["mousemove", *map(str, map(round, stroke[0])), "mousedown", "1"]
            for px, py in stroke[1:]:  # a pause per move, or Tk sees only some of them
                cmd += ["mousemove", str(round(px)), str(round(py)), "sleep", "0.02"]
            cmd += ["mouseup", "1"]
        x(*cmd)
        title("digitrec: not a digit", steady=0.6)
        screenshot(display, "gui-not-a-digit.png", (0, 0, w, h))
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "Traceback" not in out, out


@pytest.mark.slow
def test_each_action_leaves_one_state_in_a_themed_window(app, mnist, tmp_path, display):
    """Opening an image replaces the drawing; drawing replaces the opened image; the
    widgets are ttk's, in the platform's theme."""
    from tkinter import ttk

    from digitrec.gui import THEMES

    assert ttk.Style(app.root).theme_use() in THEMES
    assert app.root.nametowidget("buttons").winfo_class() == "TFrame"
    assert [str(i) for i in app.seen.cget("image")] == [str(app._images["empty"])]  # an empty frame
    screenshot(display, "gui-empty.png", (0, 0, 820, 620))
    buttons = app.root.nametowidget("buttons")
    assert app.seen.winfo_rooty() + app.seen.winfo_height() <= buttons.winfo_rooty()  # whole
    draw_with_events(app, mnist.test_images[0].numpy())  # a 7
    settled(app)
    path = tmp_path / "two.png"
    Image.fromarray(255 - mnist.test_images[1].numpy()).resize((140, 140)).save(path)
    app.open_image(path)
    wait_for(app, lambda: app.worker.idle and app.prediction.digit == 2)
    assert app.drawing.empty and not app.canvas.find_all() and "two.png" in app.thumb.cget("text")
    draw_with_events(app, mnist.test_images[0].numpy())
    assert settled(app).digit == 7 and app.thumb.cget("text") == ""
