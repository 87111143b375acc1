"""Desktop app: draw or open a digit (or a whole number) and see what the model makes of it.

``digitrec gui`` opens a Tk window. What needs no screen lives in ``Drawing`` (strokes
to an image, undo) and ``Session`` (the loaded model, switching it, errors as
sentences), so it is tested without a display. ``App`` lays out the widgets and moves
work between the UI thread and one worker thread, where every prediction and model
load runs: Tk is not thread-safe, so results come back through a queue the UI polls.
"""

from __future__ import annotations

import base64
import io
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from digitrec.errors import DigitrecError
from digitrec.feedback import FeedbackStore, correction_of
from digitrec.files import write_bytes
from digitrec.predictor import Prediction, Predictor
from digitrec.preprocess import IMAGE_SUFFIXES, MAX_IMAGE_BYTES, decode, eight_bit
from digitrec.reading import Reading, read

BRUSH = 1 / 14  # brush diameter / canvas side: MNIST's pen for a digit filling the pad
# A drawing is read with a pen this share of its strokes' extent (MNIST's pen for a digit
# of that size), never wider than the screen's: a 60 px 3 in the fat pen is a blob of an 8.
# The web page's POSTED_PEN is the same.
POSTED_PEN = 0.12
MIN_PEN = 2 / 280  # ... and never thinner than 2 px of the standard pad
MIN_SIDE = 280  # canvas pixels at Tk's standard 96 dpi; more on HiDPI screens
LIVE_EVERY = 0.12  # seconds between predictions while a stroke is being drawn
NUMBER_ASPECT = 3.0  # the canvas's width / height in number mode, as on the web page
BAR = 16  # px a probability bar's row: ten, the correction row and the 28x28 fit 620 px
IMAGE_TYPES = [
    ("Images", " ".join(f"*{s} *{s.upper()}" for s in IMAGE_SUFFIXES)),
    ("All files", "*"),
]
INSTALL_TK = """\
The desktop app needs tkinter (Python's interface to Tk), which this Python lacks.
  Debian, Ubuntu: sudo apt install python3-tk
  Fedora:         sudo dnf install python3-tkinter
  Arch:           sudo pacman -S tk
  macOS:          brew install python-tk   (the python.org installer includes it)
  Windows:        run the python.org installer again and tick "tcl/tk and IDLE"
Or use the web app, which needs none of it: digitrec serve"""

Point = tuple[float, float]


class Drawing:
    """Strokes in canvas-independent coordinates (the canvas's height is 1, its width
    ``aspect``), so the window can be resized and the drawing rendered at any size exactly
    as the screen shows it."""

    def __init__(self, aspect: float = 1.0) -> None:
        self.strokes: list[list[Point]] = []
        self.aspect = aspect

    @property
    def empty(self) -> bool:
        return not self.strokes

    def begin(self, p: Point) -> None:
        self.strokes.append([p])

    def extend(self, p: Point) -> None:
        if self.strokes:
            self.strokes[-1].append(p)

    def undo(self) -> bool:
        """Remove the last stroke; False when there was none."""
        return bool(self.strokes) and self.strokes.pop() is not None

    def clear(self) -> None:
        self.strokes.clear()

    def copy(self) -> Drawing:
        d = Drawing(self.aspect)
        d.strokes = [list(s) for s in self.strokes]
        return d

    def extent(self) -> float:
        """The strokes' size in canvas heights: a digit's longer side; a number's height."""
        pts = np.array([p for s in self.strokes for p in s]).reshape(-1, 2)
        if not len(pts):
            return 0.0
        w, h = pts.max(0) - pts.min(0)
        return float(h if self.aspect > 1 else max(w, h))

    def render(self, side: int = MIN_SIDE, read: bool = False) -> Image.Image:
        """Dark round-brush strokes on white, ``side`` pixels tall: as on screen, or as
        they are ``read``, with the pen scaled to the drawing (``POSTED_PEN``)."""
        img = Image.new("L", (round(side * self.aspect), side), 255)
        draw = ImageDraw.Draw(img)
        pen = min(BRUSH, max(MIN_PEN, POSTED_PEN * self.extent())) if read else BRUSH
        width = max(1, round(side * pen))
        r = width / 2
        for stroke in self.strokes:
            pts = [(x * side, y * side) for x, y in stroke]
            if len(pts) > 1:
                draw.line(pts, fill=0, width=width, joint="curve")
            for x, y in pts:  # round caps and joints
                draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
        return img


def describe(pred: Prediction, classes: Sequence[str]) -> tuple[str, str]:
    """The big character and the line under it."""
    if pred.blank:
        return "?", "no digit: draw one, or open an image"
    if pred.not_a_digit:
        return "×", "not a digit: draw one digit, 0 to 9"
    if pred.uncertain:
        return pred.label, f"not sure: {pred.candidates(classes)}"
    return pred.label, f"{pred.confidence:.1%} sure"


def describe_reading(r: Reading) -> tuple[str, str]:
    """The number and the line under it."""
    if r.blank:
        return "?", "no digits: write a number, or open an image"
    if r.uncertain:
        return r.text, f"not sure of every digit: {r.confidence:.0%}"
    return r.text, f"{r.confidence:.1%} sure of every digit"


def title_for(pred: Prediction | Reading | None) -> str:
    """The window title carries the answer too (taskbars show it; tests read it)."""
    if pred is None:
        return "digitrec"
    if pred.blank:
        return "digitrec: no digits" if isinstance(pred, Reading) else "digitrec: no digit"
    if isinstance(pred, Prediction) and pred.not_a_digit:
        return "digitrec: not a digit"
    text = pred.text.replace("\n", " ") if isinstance(pred, Reading) else pred.label
    return f"digitrec: {text}" + (" (not sure)" if pred.uncertain else "")


@dataclass(frozen=True)
class Answered:
    """An answer the window shows, with what a correction of it keeps."""

    prediction: Prediction
    image: Image.Image | bytes | Path  # the drawing as read, the opened file's bytes (a
    # file over the size limit: its path)
    model_sha256: str  # of the model that answered (another may be loaded since)


class Session:
    """The loaded model and what the window asks of it, without the window."""

    def __init__(self, predictor: Predictor, store: FeedbackStore | None = None) -> None:
        self.predictor = predictor
        self.store = store or FeedbackStore()
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls,
        model_path: str | None = None,
        runs_dir: str | None = None,
        backend: str = "auto",
        feedback_url: str | None = None,
    ) -> Session:
        store = FeedbackStore(feedback_url)  # a bad URL fails before the model loads
        return cls(Predictor.load(model_path, runs_dir=runs_dir, backend=backend), store)

    def status(self) -> str:
        p = self.predictor
        acc = p.meta.get("test_accuracy") or (p.meta.get("metrics") or {}).get("val_acc")
        what = "test" if p.meta.get("test_accuracy") else "validation"
        recorded = f"{what} accuracy {acc:.2%}" if isinstance(acc, float) else "accuracy unknown"
        return f"model {p.name} · {p.source} · {recorded} · {p.backend}"

    def load_model(self, path: str | Path) -> str:
        """Switch to the checkpoint at ``path``. On any error the current model stays and
        a DigitrecError says why."""
        new = Predictor.load(path)
        new.source = Path(path).name
        with self._lock:
            self.predictor = new
        return self.status()

    def predict(self, image: Any) -> Prediction:
        with self._lock:
            p = self.predictor
        return p.predict_one(image)

    def answer(self, image: Image.Image | Path) -> Answered:
        """``predict``, with what a correction needs: the image and the model's id (a
        file's bytes read here, so a correction keeps what was answered)."""
        with self._lock:
            p = self.predictor
        pred = p.predict_one(image)  # errors name the file
        kept: Image.Image | bytes | Path = image
        if isinstance(image, Path) and image.stat().st_size <= MAX_IMAGE_BYTES:
            kept = image.read_bytes()
        return Answered(pred, kept, p.sha256)

    def correct(self, answered: Answered, label: int) -> str:
        """Keep ``answered``'s image as a ``label`` in the corrections store."""
        pred, image = answered.prediction, answered.image
        if isinstance(image, Image.Image):
            buf = io.BytesIO()
            image.save(buf, "PNG")
            original: bytes | None = buf.getvalue()
        else:  # the file's bytes; a file too big to keep is corrected by its 28x28 alone
            original = image if isinstance(image, bytes) else None
        c = correction_of(pred, label, answered.model_sha256, "gui", original)
        record_id, _ = self.store.add(c)
        if label == pred.digit:
            return f"kept as a right answer (#{record_id})"
        return f"kept as a {label} (#{record_id}): digitrec learns from corrections"

    def read(self, image: Any) -> Reading:
        """Every digit of a number."""
        with self._lock:
            p = self.predictor
        return read(p, image)


def png_data(img: Image.Image) -> str:
    """Base64 PNG, the form ``tk.PhotoImage(data=...)`` reads."""
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


THEMES = ("aqua", "vista", "clam")  # macOS's and Windows' native looks; clam on Linux
RED, GREEN, AMBER, GREY = "#991b1b", "#166534", "#b45309", "#9ca3af"
BIG = ("TkDefaultFont", 56, "bold")  # the answer's digit


def themed(root: Any) -> Any:
    """ttk with the platform's native theme (clam where Tk has none: Linux), the root's
    background matched to it; returns the ttk module."""
    from tkinter import ttk

    style = ttk.Style(root)
    style.theme_use(next(t for t in THEMES if t in style.theme_names()))
    root.configure(background=style.lookup("TFrame", "background"))
    style.configure("Small.TButton", padding=(2, 0))
    return ttk


def empty_view(side: int = 112) -> Image.Image:
    """What "the model sees" shows before any answer: an empty dashed frame."""
    img = Image.new("RGB", (side, side), (243, 244, 246))
    draw = ImageDraw.Draw(img)
    for k in range(0, side, 8):  # dashes along the four edges
        for box in ((k, 0, k + 3, 1), (k, side - 2, k + 3, side - 1),
                    (0, k, 1, k + 3), (side - 2, k, side - 1, k + 3)):  # fmt: skip
            draw.rectangle(box, fill=(156, 163, 175))
    return img


class Worker:
    """One background thread. A newer job with the same key replaces a waiting one, so
    live predictions never pile up behind a fast-drawing hand."""

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}
        self.done: queue.Queue[tuple[Callable[[Any], None], Any]] = queue.Queue()
        self.running = False
        self._cv = threading.Condition()
        threading.Thread(target=self._loop, daemon=True, name="digitrec-gui-worker").start()

    def submit(self, key: str, job: Callable[[], Any], then: Callable[[Any], None]) -> None:
        with self._cv:
            self.jobs.pop(key, None)  # re-inserted last: jobs run in submission order
            self.jobs[key] = (job, then)
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self.jobs))
                key = next(iter(self.jobs))
                job, then = self.jobs.pop(key)
                self.running = True
            try:
                result: Any = job()
            except DigitrecError as exc:
                result = exc
            except Exception as exc:  # shown in the window, never a traceback
                result = DigitrecError(f"unexpected error: {exc}")
            with self._cv:
                self.done.put((then, result))
                self.running = False

    @property
    def idle(self) -> bool:
        """Nothing waiting, running, or finished and not yet shown."""
        with self._cv:
            return not self.jobs and not self.running and self.done.empty()


class App:
    """The window: canvas on the left, the answer on the right, status at the bottom."""

    def __init__(self, root: Any, session: Session) -> None:
        import tkinter as tk

        self.tk = tk
        self.root = root
        self.session = session
        self.drawing = Drawing()
        self.worker = Worker()
        self.last_live = 0.0
        self.version = 0  # of the drawing; answers to older versions are not shown
        self.prediction: Prediction | None = None
        self.answered: Answered | None = None  # the digit answer shown, to correct
        self.reading: Reading | None = None  # the answer in number mode
        self.number = tk.BooleanVar(root, value=False, name="number")
        self.photo: Image.Image | None = None  # an opened image shown on the canvas (number mode)
        self.opened = False  # an opened image's thumbnail is shown (digit mode)
        self._images: dict[str, Any] = {}  # PhotoImages must stay referenced

        dpi_scale = max(1.0, float(root.tk.call("tk", "scaling")) / (96 / 72))
        self.min_side = round(MIN_SIDE * dpi_scale)
        ttk = themed(root)
        root.title("digitrec")
        root.minsize(self.min_side + 300, self.min_side + 120)
        root.columnconfigure(0, weight=1)
        root.rowconfigure(0, weight=1)

        self.pad = pad = ttk.Frame(root, name="pad")
        pad.grid(row=0, column=0, sticky="nsew", padx=10, pady=10)
        self.canvas = tk.Canvas(
            pad, name="canvas", width=self.min_side, height=self.min_side, bg="white",
            highlightthickness=1, highlightbackground="#9ca3af", cursor="pencil",
        )  # fmt: skip
        self.canvas.place(x=0, y=0)
        pad.bind("<Configure>", self._fit_canvas)
        pad.configure(width=self.min_side, height=self.min_side)

        side = ttk.Frame(root, name="side")
        side.grid(row=0, column=1, sticky="n", padx=(0, 10), pady=10)
        modes = ttk.Frame(side, name="modes")
        modes.pack()
        for text, value, name in (("One digit", False, "digit"), ("A number", True, "number")):
            ttk.Radiobutton(modes, text=text, variable=self.number, value=value, name=name,
                            command=self.set_mode).pack(side="left", padx=4)  # fmt: skip
        self.digit = ttk.Label(side, name="digit", text="?", foreground=GREY, font=BIG)
        self.digit.pack()
        self.detail = ttk.Label(side, name="detail", text="Draw a digit")
        self.detail.pack()
        paper = ttk.Style(root).lookup("TFrame", "background") or "#d9d9d9"
        self.bars = tk.Canvas(side, name="bars", width=230, height=10 * BAR, highlightthickness=0,
                              bg=paper)  # fmt: skip
        self.bars.pack(pady=6)
        self.fix = ttk.Frame(side, name="fix")  # "Wrong? It is a ...": a correction
        self.fix.pack(pady=(0, 4))
        ask = ttk.Frame(self.fix)
        ask.pack(fill="x")
        ttk.Label(ask, text="Wrong? It is a").pack(side="left")
        self.right = ttk.Button(ask, text="Right", name="right", style="Small.TButton",
                                command=lambda: self.correct(None))  # fmt: skip
        self.right.pack(side="right")
        digits = ttk.Frame(self.fix)
        digits.pack()
        self.fix_buttons = [
            ttk.Button(digits, text=str(d), width=2, name=f"fix{d}", style="Small.TButton",
                       command=lambda d=d: self.correct(d))
            for d in range(10)
        ]  # fmt: skip
        for b in self.fix_buttons:
            b.pack(side="left")
        # The opened image beside what the model saw, not below it: stacked, the panel
        # outgrew a 620 px tall window and the thumbnail was cut off.
        self.seen_row = row = ttk.Frame(side)
        row.pack(pady=(4, 0))
        seen = ttk.Frame(row)
        seen.pack(side="left", anchor="n")
        ttk.Label(seen, text="the model sees").pack()
        self._images["empty"] = tk.PhotoImage(data=png_data(empty_view()))
        self.seen = ttk.Label(seen, name="seen", image=self._images["empty"])
        self.seen.pack()
        self.thumb = ttk.Label(row, name="thumb", compound="bottom", wraplength=112)
        self.thumb.pack(side="left", anchor="n", padx=(10, 0))

        buttons = ttk.Frame(root, name="buttons")
        buttons.grid(row=1, column=0, columnspan=2, sticky="w", padx=10)
        for text, command in (
            ("Clear (Esc)", self.clear),
            ("Undo (Ctrl+Z)", self.undo),
            ("Open image… (Ctrl+O)", self.ask_open),
            ("Save drawing… (Ctrl+S)", self.ask_save),
            ("Load model…", self.ask_model),
        ):
            ttk.Button(buttons, text=text, command=command).pack(side="left", padx=(0, 6))
        self.message = ttk.Label(root, name="message", foreground=RED, anchor="w",
                                 justify="left", wraplength=780)  # fmt: skip
        self.message.grid(row=2, column=0, columnspan=2, sticky="we", padx=10, pady=(4, 0))
        self.status = ttk.Label(root, name="status", text=session.status(), anchor="w",
                                relief="sunken", padding=(4, 1))  # fmt: skip
        self.status.grid(row=3, column=0, columnspan=2, sticky="we")

        self.canvas.bind("<ButtonPress-1>", self._press)
        self.canvas.bind("<B1-Motion>", self._drag)
        self.canvas.bind("<ButtonRelease-1>", self._release)
        for mod in ("Control", "Command"):
            root.bind(f"<{mod}-z>", lambda e: self.undo())
            root.bind(f"<{mod}-o>", lambda e: self.ask_open())
            root.bind(f"<{mod}-s>", lambda e: self.ask_save())
        root.bind("<Escape>", lambda e: self.clear())
        self._show_bars([0.0] * 10)
        self._offer_correction(False)
        root.after(30, self._poll)

    # ---------------------------------------------------------------- drawing

    @property
    def side(self) -> int:
        """The canvas's height: the drawing's unit."""
        return int(self.canvas.cget("height"))

    def _fit_canvas(self, event: Any) -> None:
        self._fit(event.width, event.height)

    def _fit(self, width: int, height: int) -> None:
        if self.number.get():  # as wide as the pad, a third as tall
            side = max(self.min_side // 3, min(height, round(width / NUMBER_ASPECT)))
        else:
            side = max(self.min_side, min(width, height))
        size = (round(side * self.drawing.aspect), side)
        if size != (int(self.canvas.cget("width")), self.side):
            self.canvas.configure(width=size[0], height=size[1])
            self._redraw()

    def _norm(self, event: Any) -> Point:
        s = self.side
        return min(max(event.x / s, 0.0), self.drawing.aspect), min(max(event.y / s, 0.0), 1.0)

    def _press(self, event: Any) -> None:
        if self.photo is not None or self.opened:  # a drawing starts afresh over an image
            self.photo = None
            self._show_opened(None)
            self._redraw()
        self.drawing.begin(self._norm(event))
        self._paint_dot(self.drawing.strokes[-1][-1])

    def _drag(self, event: Any) -> None:
        if not self.drawing.strokes:
            return
        prev = self.drawing.strokes[-1][-1]
        self.drawing.extend(self._norm(event))
        self._paint_segment(prev, self.drawing.strokes[-1][-1])
        if time.monotonic() - self.last_live >= LIVE_EVERY:
            self.predict_drawing()

    def _release(self, event: Any) -> None:
        self.predict_drawing()

    def _paint_dot(self, p: Point) -> None:
        s, r = self.side, self.side * BRUSH / 2
        self.canvas.create_oval(p[0] * s - r, p[1] * s - r, p[0] * s + r, p[1] * s + r,
                                fill="black", outline="")  # fmt: skip

    def _paint_segment(self, a: Point, b: Point) -> None:
        s = self.side
        self.canvas.create_line(a[0] * s, a[1] * s, b[0] * s, b[1] * s, width=s * BRUSH,
                                capstyle="round", joinstyle="round", fill="black")  # fmt: skip

    def _redraw(self) -> None:
        self.canvas.delete("all")
        if self.photo is not None:
            k, ox, oy = self._photo_fit()
            shown = self.photo.resize((max(1, round(self.photo.width * k)),
                                       max(1, round(self.photo.height * k))))  # fmt: skip
            self._images["canvas"] = self.tk.PhotoImage(data=png_data(shown))
            self.canvas.create_image(ox, oy, image=self._images["canvas"], anchor="nw")
        for stroke in self.drawing.strokes:
            self._paint_dot(stroke[0])
            for a, b in pairwise(stroke):
                self._paint_segment(a, b)

    # ---------------------------------------------------------------- actions

    def set_mode(self) -> None:
        """One digit on a square canvas, or a number on a wide one; either starts empty.
        A number's answer is its boxes on the canvas: no bars, no 28x28 view."""
        number = self.number.get()
        for widget, options in (
            (self.bars, {"pady": 6}),
            (self.fix, {"pady": (0, 4)}),
            (self.seen_row, {"pady": (4, 0)}),
        ):
            widget.pack_forget()
            if not number:
                widget.pack(**options)
        self.drawing = Drawing(NUMBER_ASPECT if number else 1.0)
        self.clear()
        self.root.update_idletasks()
        self._fit(self.pad.winfo_width(), self.pad.winfo_height())

    def clear(self) -> None:
        """Back to the state the window opened in: no drawing, image, answer or message."""
        self.version += 1
        self.drawing.clear()
        self.photo = None
        self.canvas.delete("all")
        self._show_opened(None)
        self.message.configure(text="")
        self._idle()

    def undo(self) -> None:
        if self.drawing.undo():
            self._redraw()
            if self.drawing.empty:
                self.version += 1
                self._idle()
            else:
                self.predict_drawing()

    def predict_drawing(self) -> None:
        self.last_live = time.monotonic()
        if self.drawing.empty:
            return
        drawing, side = self.drawing.copy(), self.side  # Tk is read here, not in the worker
        self.version += 1
        version = self.version

        def then(result: Any) -> None:
            if version == self.version:  # else the canvas changed since: a stale answer
                self._show(result)

        ask = self.session.read if self.number.get() else self.session.answer
        self.worker.submit("drawing", lambda: ask(drawing.render(side, read=True)), then)

    def correct(self, label: int | None) -> None:
        """Keep the answer shown as a ``label`` (None: as the digit it was read as)."""
        answered = self.answered
        if answered is None:
            return
        label = answered.prediction.digit if label is None else label

        def then(result: Any) -> None:
            if isinstance(result, DigitrecError):
                return self._error(result)
            self.message.configure(text=result, foreground=GREEN)

        self.worker.submit("correct", lambda: self.session.correct(answered, label), then)

    def open_image(self, path: str | Path) -> None:
        """Predict an image file and show it beside the answer (the Ctrl+O path)."""
        path = Path(path)
        number = self.number.get()

        def job() -> tuple[Answered | Reading, Image.Image]:
            pred = self.session.read(path) if number else self.session.answer(path)
            image = eight_bit(decode(path, at_least=96)[0])  # upright, as the model saw it
            if number:  # shown on the canvas, the boxes over it
                image.thumbnail((1024, 1024))
                return pred, image.convert("RGB")
            image.thumbnail((96, 96))
            return pred, image.convert("RGBA")

        def then(result: Any) -> None:
            if isinstance(result, DigitrecError):
                return self._error(result)
            pred, thumb = result
            self.version += 1  # the image replaces the drawing, and any answer on its way
            self.drawing.clear()
            number = isinstance(pred, Reading)
            self.photo = thumb if number else None
            self._show_opened(None if number else (path.name, thumb))
            self._redraw()
            self._show(pred)

        self.worker.submit("open", job, then)

    def save_drawing(self, path: str | Path) -> None:
        if self.drawing.empty:
            return self._error(DigitrecError("Nothing to save: the canvas is blank."))
        buf = io.BytesIO()
        self.drawing.render(self.side).save(buf, "PNG")
        try:
            write_bytes(path, buf.getvalue())
        except OSError as exc:
            return self._error(DigitrecError(f"Could not save {path}: {exc.strerror or exc}"))
        self.message.configure(text=f"saved {path}", foreground=GREEN)

    def load_model(self, path: str | Path) -> None:
        def then(result: Any) -> None:
            if isinstance(result, DigitrecError):
                return self._error(DigitrecError(f"{result} The previous model stays loaded."))
            self.status.configure(text=result)
            self.message.configure(text="")
            self.predict_drawing()

        self.worker.submit("model", lambda: self.session.load_model(path), then)

    def ask_open(self) -> None:
        from tkinter import filedialog

        path = filedialog.askopenfilename(parent=self.root, filetypes=IMAGE_TYPES)
        if path:
            self.open_image(path)

    def ask_save(self) -> None:
        from tkinter import filedialog

        path = filedialog.asksaveasfilename(
            parent=self.root, defaultextension=".png", filetypes=[("PNG", "*.png")]
        )
        if path:
            self.save_drawing(path)

    def ask_model(self) -> None:
        from tkinter import filedialog

        path = filedialog.askopenfilename(
            parent=self.root, filetypes=[("digitrec models", "*.safetensors *.onnx")]
        )
        if path:
            self.load_model(path)

    # ---------------------------------------------------------------- showing

    def _poll(self) -> None:
        while True:
            try:
                then, result = self.worker.done.get_nowait()
            except queue.Empty:
                break
            then(result)
        self.root.after(30, self._poll)

    def _photo_fit(self) -> tuple[float, float, float]:
        """Scale and offset of the opened image on the canvas: fitted, centred."""
        assert self.photo is not None
        w, h = int(self.canvas.cget("width")), self.side
        k = min(w / self.photo.width, h / self.photo.height)
        return k, (w - self.photo.width * k) / 2, (h - self.photo.height * k) / 2

    def _show_reading(self, r: Reading) -> None:
        self.reading = r
        big, line = describe_reading(r)
        self.digit.configure(text=big, foreground=AMBER if r.uncertain else "",
                             font=("TkDefaultFont", 40, "bold"))  # fmt: skip
        self.detail.configure(text=line)
        self.message.configure(text="")
        self.root.title(title_for(r))
        self._show_bars([0.0] * 10)
        self.canvas.delete("boxes")
        # The drawing is rendered at the canvas's size, so its pixels are the canvas's.
        k, ox, oy = 1.0, 0.0, 0.0
        if self.photo is not None:  # boxes are in the file's pixels, the photo smaller
            k, ox, oy = self._photo_fit()
            k *= self.photo.width / r.source_size[0]
        for c in r.chars:
            x0, y0, x1, y1 = (ox + c.box[0] * k, oy + c.box[1] * k,
                              ox + c.box[2] * k, oy + c.box[3] * k)  # fmt: skip
            colour = AMBER if c.probabilities and c.confidence < 0.6 else "#2563eb"
            self.canvas.create_rectangle(x0 - 2, y0 - 2, x1 + 2, y1 + 2, outline=colour,
                                         width=2, tags="boxes")  # fmt: skip
            if c.probabilities:
                above = y0 > 18  # else below the box, at the canvas's top edge
                self.canvas.create_text(x0, y0 - 4 if above else y1 + 4,
                                        anchor="sw" if above else "nw",
                                        text=f"{c.char} {c.confidence:.0%}", fill=colour,
                                        tags="boxes")  # fmt: skip

    def _show(self, pred: Any) -> None:
        if isinstance(pred, DigitrecError):
            return self._error(pred)
        if isinstance(pred, Reading):
            return self._show_reading(pred)
        if isinstance(pred, Answered):
            self.answered, pred = pred, pred.prediction
        self._offer_correction(not pred.blank)
        self.prediction = pred
        big, line = describe(pred, self.session.predictor.classes)
        colour = GREY if pred.blank else AMBER if pred.uncertain else ""
        self.digit.configure(text=big, foreground=colour, font=BIG)
        self.detail.configure(text=line)
        self.message.configure(text="")
        self.root.title(title_for(pred))
        self._show_bars(pred.probabilities, None if pred.blank else pred.digit)
        seen = Image.fromarray((pred.image * 255).round().astype("uint8"))
        photo = self.tk.PhotoImage(data=png_data(seen.resize((112, 112), Image.Resampling.NEAREST)))
        self._images["seen"] = photo
        self.seen.configure(image=photo)

    def _show_opened(self, opened: tuple[str, Image.Image] | None) -> None:
        """The opened image's thumbnail and name beside the model's view, or nothing."""
        self.opened = opened is not None
        if opened is None:
            self._images.pop("thumb", None)
            self.thumb.configure(image="", text="")
            return
        name, thumb = opened
        self._images["thumb"] = photo = self.tk.PhotoImage(data=png_data(thumb))
        short = name if len(name) <= 24 else f"{name[:10]}…{name[-12:]}"
        self.thumb.configure(image=photo, text=f"opened: {short}")

    def _offer_correction(self, on: bool) -> None:
        if not on:
            self.answered = None
        state = "normal" if on else "disabled"
        for b in self.fix_buttons:
            b.configure(state=state)
        digit = self.answered.prediction.digit if on and self.answered else None
        self.right.configure(state="normal" if digit is not None else "disabled")

    def _idle(self) -> None:
        self._offer_correction(False)
        self.prediction = self.reading = None
        self.digit.configure(text="?", foreground=GREY, font=BIG)
        self.detail.configure(text="Write a number" if self.number.get() else "Draw a digit")
        self.root.title(title_for(None))
        self._show_bars([0.0] * 10)
        self.seen.configure(image=self._images["empty"])

    def _error(self, exc: DigitrecError) -> None:
        self.message.configure(text=str(exc), foreground=RED)

    def _show_bars(self, probs: list[float], top: int | None = None) -> None:
        c = self.bars
        c.delete("all")
        for d, p in enumerate(probs):
            y, mid = d * BAR, d * BAR + BAR / 2
            c.create_text(8, mid, text=str(d), anchor="center")
            c.create_rectangle(20, y + 3, 170, y + BAR - 3, fill="#e5e7eb", outline="")
            colour = "#2563eb" if d == top else "#9ca3af"
            c.create_rectangle(20, y + 3, 20 + 150 * p, y + BAR - 3, fill=colour, outline="")
            c.create_text(176, mid, text=f"{p:.1%}", anchor="w")


def run(
    model_path: str | None = None,
    runs_dir: str | None = None,
    image: str | None = None,
    backend: str = "auto",
    feedback_url: str | None = None,
) -> None:
    """`digitrec gui`: load the model (errors before any window opens), then the window."""
    try:
        import tkinter as tk
    except ImportError:
        raise DigitrecError(INSTALL_TK) from None
    session = Session.start(model_path, runs_dir, backend, feedback_url)
    try:
        root = tk.Tk(className="digitrec")
    except tk.TclError as exc:
        raise DigitrecError(
            f"Cannot open a window ({exc}). Run it on a desktop, or set DISPLAY; "
            "on a server use the web app: digitrec serve"
        ) from None
    app = App(root, session)
    if image:
        app.open_image(image)
    root.mainloop()
