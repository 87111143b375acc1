"""Reading whole numbers: `digitrec read` on numbers composed from MNIST digits.

Numbers of 1 to 8 digits as people write them: gaps from wide to touching to
overlapping, baseline and size jitter, a slant, some with a decimal point, two lines;
drawn with the page's pen (#111 on white, PNG) or photographed on paper under a lamp
(gradient, noise, blur, JPEG). Digits are MNIST *test* digits (``--split val``: the
validation split carved from training data, seed 0, for tuning without the test set).

Columns: whole-number accuracy (every character right, nothing missing or extra),
per-digit accuracy (characters matched in order, over the true ones), and the reference
in the same run: the share of numbers whose every digit the digit model reads right when
each is handed to `digitrec predict` alone, drawn on the canvas at the same size (what
segmentation could reach at best). Then milliseconds per number, PNG or JPEG bytes in,
text out. Gaps are in pixels of MNIST's 28 px grid (a digit ~20 px tall there), drawn at
``--height``.

    python benchmarks/whole_numbers.py [--n 300] [--split test|val] [--seed 0] [--height 60]
                                 [--model-path PATH] [--sheet FILE.png]
"""

from __future__ import annotations

import argparse
import difflib
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))

from digitrec.compose import Number, compose, pen_strokes
from digitrec.data import load_dataset, split_indices
from digitrec.predictor import Predictor
from digitrec.reading import read
from digitrec.runs import companion_or_shipped
from variants import jpeg

Rng = np.random.Generator


@dataclass
class Sample:
    data: bytes  # the encoded image
    text: str  # the truth
    singles: list[bytes]  # each digit drawn alone, for the reference
    labels: list[int]


def one_digit(digit: np.ndarray, height: int, rng: Rng) -> bytes:
    """The digit alone, drawn on the canvas as in a number: the reference's input."""
    strokes = pen_strokes(digit, height)
    return Number(strokes, np.where(strokes >= 0.3, 0, -1)).framed(0.3, rng).png()


def photo_jpeg(strokes: np.ndarray, rng: Rng) -> bytes:
    """Dark ink on paper under a lamp: gradient, noise, a little blur, JPEG."""
    H, W = strokes.shape
    ys, xs = np.mgrid[0:H, 0:W] / max(H, W)
    angle = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(0.55, 0.95) + 0.25 * (np.cos(angle) * xs + np.sin(angle) * ys - 0.5)
    ink = ndimage.gaussian_filter(strokes, rng.uniform(0.3, 1.5))
    page = np.clip(light, 0.3, 1.0) * (1 - 0.8 * ink) + rng.normal(0, 0.03, (H, W))
    return jpeg(page, int(rng.integers(60, 90)))


Kind = Callable[[Rng], tuple[int, tuple[float, float], bool, bool]]


CATEGORIES: dict[str, Kind] = {
    # name: rng -> (digits, gap range in MNIST px, decimal point, photo)
    "separated, 4 digits": lambda r: (4, (2, 8), False, False),
    "touching, 4 digits": lambda r: (4, (0, 0), False, False),
    "overlapping 1-3 px, 4 digits": lambda r: (4, (-3, -1), False, False),
    "1 to 8 digits": lambda r: (int(r.integers(1, 9)), (0, 8), False, False),
    "decimal point": lambda r: (int(r.integers(2, 7)), (2, 8), True, False),
    "photo on paper, 4 digits": lambda r: (4, (2, 8), False, True),
}


def sample(kind: Kind, pool: np.ndarray, images, labels, rng: Rng, height: int) -> Sample:
    n, gaps, point, photo = kind(rng)
    idx = rng.choice(pool, n, replace=False)
    digits = [images[i] for i in idx]
    at = int(rng.integers(0, n - 1)) if point and n > 1 else None
    number = compose(digits, rng, gaps, height, at).framed(0.3, rng)
    text = "".join(str(int(labels[i])) + ("." if k == at else "") for k, i in enumerate(idx))
    singles = [one_digit(d, height, rng) for d in digits]
    data = photo_jpeg(number.strokes, rng) if photo else number.png()
    return Sample(data, text, singles, [int(labels[i]) for i in idx])


def two_lines(pool, images, labels, rng: Rng, height: int) -> Sample:
    """Two numbers of 2 to 5 digits, one above the other, each line shifted."""
    a, b = (sample(CATEGORIES["separated, 4 digits"], pool, images, labels, rng, height)
            for _ in range(2))  # fmt: skip
    da, db = (np.asarray(Image.open(io.BytesIO(s.data)).convert("L"), np.float32) for s in (a, b))
    W = max(da.shape[1], db.shape[1]) + height
    page = np.full((da.shape[0] + db.shape[0], W), 255, np.float32)
    xa, xb = int(rng.integers(0, W - da.shape[1] + 1)), int(rng.integers(0, W - db.shape[1] + 1))
    page[: da.shape[0], xa : xa + da.shape[1]] = da
    page[da.shape[0] :, xb : xb + db.shape[1]] = db
    buf = io.BytesIO()
    Image.fromarray(page.astype(np.uint8)).save(buf, "PNG")
    return Sample(
        buf.getvalue(), a.text + "\n" + b.text, a.singles + b.singles, a.labels + b.labels
    )


def matched(truth: str, got: str) -> int:
    """Characters of ``truth`` read right, in order."""
    return sum(b.size for b in difflib.SequenceMatcher(None, truth, got).get_matching_blocks())


def point_right(truth: str, got: str) -> bool:
    return got.count(".") == 1 and got.index(".") == truth.index(".")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="numbers per category")
    ap.add_argument("--split", choices=["test", "val"], default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--height", type=int, default=60, help="digit height drawn, px")
    ap.add_argument("--model-path")
    ap.add_argument("--sheet", help="PNG showing one number of each category")
    args = ap.parse_args()
    ds = load_dataset("mnist")
    if args.split == "test":
        images, labels = ds.test_images.numpy(), ds.test_labels.numpy()
        pool = np.arange(len(images))
    else:
        images, labels = ds.train_images.numpy(), ds.train_labels.numpy()
        pool = np.asarray(split_indices(len(images), 5000, 0)[1])
    predictor = Predictor.load(args.model_path)
    rng = np.random.default_rng(args.seed)
    cats = {k: (lambda k=k: sample(CATEGORIES[k], pool, images, labels, rng, args.height))
            for k in CATEGORIES}  # fmt: skip
    cats["two lines, 4 digits each"] = lambda: two_lines(pool, images, labels, rng, args.height)
    reader = predictor.reading_model()
    print(f"model {predictor.name} ({predictor.backend}), reading model "
          f"{reader.path.name if reader.path else '?'} ({reader.backend}), line model "
          f"{companion_or_shipped(predictor.path, 'lines').name} (torch), {args.n} numbers "
          f"per category, "
          f"MNIST {args.split} digits drawn {args.height} px tall")  # fmt: skip
    print(f"{'category':<30} {'whole':>7} {'digits':>7} {'ref':>7} {'ms':>6}  notes")
    shown = []
    for name, make in cats.items():
        samples = [make() for _ in range(args.n)]
        shown.append(samples[0])
        t0, got = time.perf_counter(), [read(predictor, s.data).text for s in samples]
        ms = (time.perf_counter() - t0) / len(samples) * 1000
        whole = np.mean([g == s.text for g, s in zip(got, samples, strict=True)])
        digits = sum(matched(s.text, g) for g, s in zip(got, samples, strict=True)) / sum(
            len(s.text) for s in samples
        )
        singles = predictor.predict([b for s in samples for b in s.singles])
        k, ref = 0, []
        for s in samples:
            ref.append(all(p.digit == y for p, y in zip(singles[k:], s.labels, strict=False)))
            k += len(s.labels)
        note = ""
        if name == "decimal point":
            placed = [point_right(s.text, g) for g, s in zip(got, samples, strict=True)]
            note = f"point placed right {np.mean(placed):.1%}"
        wrong = [(s.text, g) for g, s in zip(got, samples, strict=True) if g != s.text][:3]
        note += (" " if note else "") + "e.g. " + ", ".join(f"{t!r}->{g!r}" for t, g in wrong)
        print(f"{name:<30} {whole:>7.1%} {digits:>7.1%} {np.mean(ref):>7.1%} {ms:>6.1f}  {note}")
    if args.sheet:
        pics = [Image.open(io.BytesIO(s.data)).convert("L") for s in shown]
        W, H = max(p.width for p in pics), sum(p.height + 10 for p in pics)
        sheet = Image.new("L", (W, H), 128)
        y = 0
        for p in pics:
            sheet.paste(p, (0, y))
            y += p.height + 10
        sheet.save(args.sheet)
        print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
