"""Numbers written with MNIST digits: the benchmark's test numbers and the reading
model's training numbers, drawn the same way (from different splits).

Each digit is redrawn with a pen at a chosen height, with size and baseline jitter, a
gap (or an overlap) to its neighbour measured between their nearest strokes, an
optional decimal point, and a slant over the whole. Every inked pixel remembers which
digit drew it, so the pieces a reader cuts can be told apart as one digit or not.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

Rng = np.random.Generator
INK = 0.3  # a pixel with at least this much of a digit's stroke belongs to that digit


@dataclass
class Number:
    strokes: np.ndarray  # (H, W) float32 in [0, 1], light on black
    owner: np.ndarray  # (H, W) int: which digit inked each pixel; -1 for none or a mark

    def framed(self, margin: float, rng: Rng) -> Number:
        """Cropped to the ink with a margin of ``margin`` x its height (and a few px more)."""
        inked = self.strokes > 0.05
        rows, cols = np.flatnonzero(inked.any(1)), np.flatnonzero(inked.any(0))
        m = int(margin * (rows[-1] - rows[0] + 1)) + int(rng.integers(0, 8))
        crop = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        return Number(
            np.pad(self.strokes[crop], m), np.pad(self.owner[crop], m, constant_values=-1)
        )

    def canvas(self) -> Image.Image:
        """As the page draws it: #111 ink on white."""
        return Image.fromarray(to_u8(1.0 - self.strokes * (1.0 - 0x11 / 255)))

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.canvas().save(buf, "PNG")
        return buf.getvalue()


def to_u8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0, 1) * 255).round().astype(np.uint8)


def pen_strokes(digit: np.ndarray, size: int) -> np.ndarray:
    """The digit redrawn at ``size`` px as crisp anti-aliased strokes in [0, 1], the way a
    pen on a canvas renders (not a blurry upscale)."""
    rows, cols = np.flatnonzero(digit.max(1) > 30), np.flatnonzero(digit.max(0) > 30)
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / 255
    h, w = crop.shape
    f = size / max(h, w)
    up = np.asarray(
        Image.fromarray(crop, "F").resize((max(1, round(w * f)), max(1, round(h * f))),
                                          Image.Resampling.BICUBIC)
    )  # fmt: skip
    return np.clip((up - 0.45) / 0.3, 0, 1).astype(np.float32)


def profile(a: np.ndarray, side: str) -> np.ndarray:
    """Per row, the first (left) or last (right) inked column; NaN where a row is empty."""
    inked = a > 0.3
    idx = np.argmax(inked, 1) if side == "left" else a.shape[1] - 1 - np.argmax(inked[:, ::-1], 1)
    return np.where(inked.any(1), idx, np.nan).astype(np.float32)


def offset(strip: np.ndarray, glyph: np.ndarray, gap: float) -> int:
    """The column at which ``glyph`` (as tall as ``strip``) goes so that its nearest ink is
    ``gap`` px right of the strip's (negative: overlapping by that much)."""
    right, left = profile(strip, "right"), profile(glyph, "left")
    both = ~np.isnan(right) & ~np.isnan(left)
    if not both.any() or not strip.any():  # nothing beside it: gap from the strip's ink box
        cols = np.flatnonzero(strip.any(0))
        return max(0, (cols[-1] + 1 if cols.size else 0) + round(gap))
    return max(0, round(float(np.nanmax(right[both] - left[both])) + 1 + gap))


def dot(height: int, rng: Rng) -> np.ndarray:
    r = max(2.0, rng.uniform(0.05, 0.08) * height)
    n = int(2 * r + 3)
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    return np.clip(r + 0.5 - np.hypot(yy, xx), 0, 1).astype(np.float32)


def compose(digits: list[np.ndarray], rng: Rng, gaps: tuple[float, float], height: int,
            point: int | None = None) -> Number:  # fmt: skip
    """A number's strokes: each 28x28 digit redrawn at ``height`` with size and baseline
    jitter, ``gaps`` (px of MNIST's 28 px grid) between neighbours, a slant, and a
    decimal point after digit ``point``."""
    px = height / 20  # drawing pixels per MNIST pixel (a digit is ~20 px tall there)
    H, top = int(height * 1.6), int(height * 0.3)
    layers: list[np.ndarray] = []  # each digit's (or the point's) strokes, full size

    def put(glyph: np.ndarray, y: int, gap: float, beside: bool = False) -> None:
        nonlocal layers
        rows = max(H, y + glyph.shape[0], *(a.shape[0] for a in layers))
        strip = np.zeros((rows, 1), np.float32)
        layers = [np.pad(a, ((0, rows - a.shape[0]), (0, 0))) for a in layers]
        if layers:
            strip = np.max(layers, 0)
        g = np.zeros((rows, glyph.shape[1]), np.float32)
        g[y : y + glyph.shape[0]] = glyph
        # A point is written after its digit's whole ink, and the next digit after it:
        # neither tucked under an overhang.
        x = offset(strip, np.ones_like(g) if beside else g, gap)
        cols = max(strip.shape[1], x + g.shape[1])
        layers = [np.pad(a, ((0, 0), (0, cols - a.shape[1]))) for a in layers]
        layers.append(np.zeros((rows, cols), np.float32))
        layers[-1][:, x : x + g.shape[1]] = g

    for k, d in enumerate(digits):
        g = pen_strokes(d, int(height * rng.uniform(0.85, 1.15)))
        y = top + int(rng.uniform(-0.06, 0.06) * height) + (height - g.shape[0]) // 2
        put(g, max(0, y), rng.uniform(*gaps) * px if k else 0, beside=point == k - 1)
        if point is not None and k == point:
            p = dot(height, rng)
            put(p, top + height - p.shape[0], rng.uniform(3, 6) * px, beside=True)
    slant = rng.uniform(-0.15, 0.15)
    stack = np.stack([_slanted(a, slant) for a in layers])
    strokes = _slanted(np.max(layers, 0), slant)
    owner = np.where(strokes >= INK, stack.argmax(0), -1)
    if point is not None:  # the point's layer follows digit ``point``'s
        owner = np.where(owner == point + 1, -1, np.where(owner > point + 1, owner - 1, owner))
    return Number(strokes, owner)


def _slanted(a: np.ndarray, slant: float) -> np.ndarray:
    H, W = a.shape
    pad = int(abs(slant) * H) + 1
    img = Image.fromarray(np.pad(a, ((0, 0), (pad, pad))), "F").transform(
        (W + 2 * pad, H), Image.Transform.AFFINE, (1, slant, -slant * H / 2, 0, 1, 0),
        Image.Resampling.BILINEAR)  # fmt: skip
    return np.asarray(img)
