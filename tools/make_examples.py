"""Remake the page's examples (src/digitrec/web/static/examples/): digits from the MNIST
training split shown as people hand them over (scanned, drawn with a pen, cropped tight,
photographed on paper) and a number written with training digits, with examples.json,
the list the page shows. Test digits are never used.

    python tools/make_examples.py [--seed 0]

Each example is the first training digit of its label (from a seeded shuffle) that the
shipped model reads as that label: an example that misreads would show a visitor a
failure before they have drawn anything. The test of the page clicks them.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from digitrec.compose import compose, pen_strokes  # noqa: E402
from digitrec.data import load_dataset  # noqa: E402
from digitrec.predictor import Predictor  # noqa: E402
from digitrec.reading import read  # noqa: E402
from digitrec.runs import shipped_model_path  # noqa: E402
from variants import phone_photo  # noqa: E402

OUT = ROOT / "src/digitrec/web/static/examples"


def scanned(d: np.ndarray, rng) -> Image.Image:
    return Image.fromarray(255 - d).resize((112, 112), Image.Resampling.BICUBIC)


def pen(d: np.ndarray, rng) -> Image.Image:
    ink = pen_strokes(d, 180)
    page = np.zeros((240, 240), np.float32)
    top, left = (240 - ink.shape[0]) // 2, (240 - ink.shape[1]) // 2
    page[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    return Image.fromarray((255 - page * 238).astype(np.uint8))


def tight(d: np.ndarray, rng) -> Image.Image:
    rows, cols = np.flatnonzero(d.max(1) > 30), np.flatnonzero(d.max(0) > 30)
    crop = 255 - d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return Image.fromarray(crop).resize((crop.shape[1] * 6, crop.shape[0] * 6))


def photo(d: np.ndarray, rng) -> Image.Image:
    img = Image.open(io.BytesIO(phone_photo(d, rng, share=(0.35, 0.45))))
    return img.resize((640, 480), Image.Resampling.LANCZOS)


# file, label, how, what the page's tooltip says
DIGITS = [
    ("scanned-3.png", 3, scanned, "a 3, scanned"),
    ("pen-7.png", 7, pen, "a 7 drawn with a pen"),
    ("tight-2.png", 2, tight, "a 2 cropped tight to its ink"),
    ("photo-5.jpg", 5, photo, "a 5 on paper, photographed with a phone"),
]
NUMBER = ("number-4096.png", "4096", "the number 4096, written")


def save(img: Image.Image, name: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG" if name.endswith(".jpg") else "PNG", quality=85, optimize=True)
    (OUT / name).write_bytes(buf.getvalue())
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    ds = load_dataset("mnist")
    images, labels = ds.train_images.numpy(), ds.train_labels.numpy()
    order = rng.permutation(len(images))
    predictor = Predictor.load(shipped_model_path())
    OUT.mkdir(parents=True, exist_ok=True)
    listed = []
    for name, label, how, title in DIGITS:
        for i in order[labels[order] == label]:
            data = save(how(images[i], rng), name)
            p = predictor.predict_one(data)
            if p.digit == label and not p.uncertain:
                break
        print(f"{name}: training digit #{i}, read {p.label} ({p.confidence:.0%})")
        listed.append({"file": name, "mode": "digit", "title": title, "expect": str(label)})
    name, text, title = NUMBER
    for _ in range(50):
        picks = [images[rng.choice(np.flatnonzero(labels == int(c)))] for c in text]
        number = compose(picks, rng, gaps=(3, 6), height=90).framed(0.3, rng)
        data = save(number.canvas(), name)
        if read(predictor, data).text == text:
            break
    print(f"{name}: read {read(predictor, data).text}")
    listed.append({"file": name, "mode": "number", "title": title, "expect": text})
    (OUT / "examples.json").write_text(json.dumps(listed, indent=1) + "\n")
    print(f"wrote {len(listed)} examples to {OUT}")


if __name__ == "__main__":
    main()
