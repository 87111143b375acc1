"""Things people hand a digit recognizer that are not digits, drawn as the page's pad would
post them (light strokes on black, 280 px): scribbles, letters and symbols in a font,
blots, a dot; and Fashion-MNIST's clothes. The trust benchmark's outliers, from its own
seeds (and Fashion-MNIST's test split); anything trained on them must use other seeds
and the training split.

Letters that handwriting shares with digits (O and 0, l and 1, S and 5, ...) are left out:
no method can call a drawn "O" not a digit.
"""

from __future__ import annotations

import io
import string
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 280
# As digits: O o Q D 0, I l i j J 1, Z z 2, A 4, S s 5, b G 6, T 7, B 8, g q 9.
LOOKALIKES = set("OoQDIlijJZzASsbGTBgq")
LETTERS = [c for c in string.ascii_letters if c not in LOOKALIKES]
SYMBOLS = list("+=?#*%&@$<>~^{}")  # not / [ ] !, which a hand draws as a 1
Rng = np.random.Generator


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _pad() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (PAD, PAD), 0)
    return img, ImageDraw.Draw(img)


def scribble(rng: Rng) -> bytes:
    """A random walk of 8 to 30 pen moves: a doodle, a crossed-out mess."""
    img, draw = _pad()
    n = int(rng.integers(8, 31))
    pts = np.clip(np.cumsum(rng.normal(0, 40, (n, 2)), 0) + PAD / 2, 20, PAD - 20)
    draw.line([tuple(p) for p in pts], fill=255, width=int(rng.integers(10, 23)), joint="curve")
    return _png(img)


def _glyph(rng: Rng, chars: list[str]) -> bytes:
    img, draw = _pad()
    font = ImageFont.load_default(size=int(rng.integers(120, 221)))  # Pillow's own font
    ch = chars[int(rng.integers(len(chars)))]
    xy = (PAD / 2 + rng.uniform(-30, 30), PAD / 2 + rng.uniform(-30, 30))
    draw.text(xy, ch, fill=255, font=font, anchor="mm")
    return _png(img.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR))


def letter(rng: Rng) -> bytes:
    return _glyph(rng, LETTERS)


def symbol(rng: Rng) -> bytes:
    return _glyph(rng, SYMBOLS)


def blot(rng: Rng) -> bytes:
    """One to three filled ellipses run together: an ink blot, a thumbprint."""
    img, draw = _pad()
    for _ in range(int(rng.integers(1, 4))):
        (cx, cy), (rx, ry) = rng.uniform(80, 200, 2), rng.uniform(20, 70, 2)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    return _png(img)


def dot(rng: Rng) -> bytes:
    img, draw = _pad()
    (cx, cy), r = rng.uniform(60, 220, 2), rng.uniform(6, 15)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    return _png(img)


KINDS: dict[str, Callable[[Rng], bytes]] = {
    "scribble": scribble,
    "letter": letter,
    "symbol": symbol,
    "blot": blot,
    "dot": dot,
}
