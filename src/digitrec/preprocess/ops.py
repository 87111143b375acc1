"""Image operations the stages share: quantiles, resizing, morphology by shifted maxima,
Otsu's threshold, centres of mass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def border_pixels(a: np.ndarray) -> np.ndarray:
    """The outermost 5% of rows and columns (at least one), as (N,) or (N, channels)."""
    h, w = a.shape[:2]
    k = max(1, min(h, w) // 20)
    parts = [a[:k], a[-k:], a[:, :k], a[:, -k:]]
    return np.concatenate([p.reshape(-1, *a.shape[2:]) for p in parts])


def quantiles(a: np.ndarray, qs: list[float]) -> list[float]:
    """Nearest-rank quantiles by one partial sort: np.percentile's answer to within a
    rank, at a tenth of its overhead on the few thousand values used here.

    The values asked about are mostly one value (a blank background, a white border),
    on which np.partition slows down tenfold: the ties at the minimum are counted
    instead of sorted."""
    flat = a.ravel()
    ks = [min(flat.size - 1, max(0, round(q * (flat.size - 1)))) for q in qs]
    low = flat.min()
    ties = flat == low
    n_low = int(np.count_nonzero(ties))
    if n_low < flat.size // 4:
        part = np.partition(flat, ks)
        return [float(part[k]) for k in ks]
    rest = flat[~ties]
    above = sorted({k - n_low for k in ks if k >= n_low})
    part = np.partition(rest, above) if above else rest
    return [float(low) if k < n_low else float(part[k - n_low]) for k in ks]


def border_level(gray: np.ndarray) -> float:
    """The median brightness of the border: the background, for a digit that does not
    cover most of every edge."""
    return quantiles(border_pixels(gray), [0.5])[0]


def clear_mass(deviation: np.ndarray, margin: float = 0.15) -> float:
    """How much of an image stands clearly (more than ``margin``) on one side of its
    background."""
    return float(np.clip(deviation - margin, 0, None).sum())


def resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float image to (width, height): area averaging down, bilinear up."""
    w, h = size
    shrinking = w < a.shape[1] or h < a.shape[0]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    a = np.ascontiguousarray(a, dtype=np.float32)
    out = Image.frombuffer("F", a.shape[::-1], a, "raw", "F", 0, 1).resize((w, h), resample)
    return np.asarray(out, dtype=np.float32)


def fit(a: np.ndarray, side: int, enlarge: bool = True) -> np.ndarray:
    """Resize so the longer side is ``side`` pixels, keeping the aspect ratio."""
    h, w = a.shape
    f = side / max(h, w)
    if f >= 1 and not enlarge:
        return a
    return resize(a, (max(1, round(w * f)), max(1, round(h * f))))


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1]."""
    if values.size == 0 or np.ptp(values) < 1e-6:
        return float(values.max(initial=0.5)) * 0.5
    bins = np.minimum((np.clip(values, 0.0, 1.0) * 64).astype(np.intp), 63)
    hist = np.bincount(bins.ravel(), minlength=64)  # np.histogram, at a tenth of the cost
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    centers = (np.arange(64) + 0.5) / 64
    w0 = np.cumsum(p)
    m = np.cumsum(p * centers)
    spread = w0 * (1 - w0)  # zero where one class is empty: no split there
    between = np.divide((m[-1] * w0 - m) ** 2, spread, out=np.full(64, -1.0), where=spread > 0)
    return float(centers[int(np.argmax(between))])


def grow(mask: np.ndarray, r: int) -> np.ndarray:
    """Dilate a mask by ``r`` pixels with a square (outside the image counts as empty)."""
    return _square_max(mask, r, False)


def shrink(mask: np.ndarray, r: int) -> np.ndarray:
    """Erode a mask by ``r`` pixels with a square (outside the image counts as empty)."""
    return ~_square_max(~mask, r, True)


def _square_max(a: np.ndarray, r: int, outside: Any) -> np.ndarray:
    """The maximum over each (2r+1)^2 square, ``outside`` standing for pixels beyond the
    edge. Whole-array maxima of shifted views (log2 of the width per axis): several times
    cheaper than ndimage's filters on the 100-pixel images here, where their per-call
    overhead is most of the cost."""
    h, w = a.shape
    k = 2 * r + 1
    p = np.full((h + 2 * r, w + 2 * r), outside, a.dtype)
    p[r : r + h, r : r + w] = a
    span = 1
    while span < k:  # row i becomes the maximum of rows i .. i + span - 1, span doubling
        s = min(span, k - span)
        p = np.maximum(p[:-s], p[s:])
        span += s
    span = 1
    while span < k:
        s = min(span, k - span)
        p = np.maximum(p[:, :-s], p[:, s:])
        span += s
    return p


def disk(r: int) -> np.ndarray:
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= r * r + r


def center_of_mass(a: np.ndarray) -> tuple[float, float]:
    total = a.sum()
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / total), float((xs * a).sum() / total)
