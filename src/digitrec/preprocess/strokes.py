"""Stroke width: measured, and hairlines thickened or blobs thinned towards MNIST's pen."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from digitrec.preprocess.ops import _square_max, disk, fit, grow, shrink

STROKE_SIDE = 80  # the resolution at which stroke width is adjusted (4x final)


# ... and measured at half that: the same accuracy, less time (docs/results.md#measured).
STROKE_MEASURE_SIDE = 40


# Unless halving fades the strokes below the threshold (lines 1-2 px wide at 80 px): when
# less than this share of the ink's area is left at 40 px, the width is measured at 80.
STROKE_KEPT = 0.7


# Stroke width relative to the digit's longer side. On MNIST (every 60th training digit,
# cropped and scaled to 80 px) the 1st, 50th and 99th percentiles are 0.056, 0.115, 0.217
# (measured at 40 px: 0.044, 0.105, 0.226): only strokes well outside that are changed.
STROKE_RANGE = (0.06, 0.28)


FAINT_LEVEL = 0.9  # a 20x20 digit whose ink's 90th percentile is below this is brightened


STROKE_MIN_SOURCE = 40  # px: digits smaller than this in the source are never thickened


STROKE_TARGET = 0.115


def stroke_width(a: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the mean distance to the background along the
    strokes' ridge, which is the width for a stroke of any length."""
    mask = a > 0.5
    if not mask.any():
        return 0.0
    # Specks and pinholes (impulse noise, a dry pen) would read as hairlines: measure
    # the strokes with pinholes closed, and only pieces with a real share of the ink.
    mask = shrink(grow(mask, 1), 1) | mask  # a closing
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        big = sizes >= 0.05 * sizes.sum()
        if big.any():  # a line of 20 or more even dashes has no big piece: measure them all
            mask = big[labels]
    # Beyond the crop is background: without this border a stroke filling its crop (a
    # hard-edged bar) measured as wide as the crop, and was thinned away.
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ridge = dist >= _square_max(dist, 1, 0.0)  # 0 is at or below every distance
    return float(2 * dist[ridge & mask].mean() - 1)


def normalize_stroke(a: np.ndarray, thicken: bool = True) -> tuple[np.ndarray, str | None]:
    """Thicken hairlines (unless not ``thicken``) and thin marker strokes to MNIST's pen
    width (at 80 px, the width measured at 40)."""
    small = np.clip(fit(a, STROKE_MEASURE_SIDE), 0, 1)
    kept = np.count_nonzero(small > 0.5) / (small.size / a.size)
    if kept < STROKE_KEPT * np.count_nonzero(a > 0.5):  # hairlines faded away when halved
        small = a
    width = stroke_width(small) / max(small.shape)
    if width <= 0:
        return a, None
    lo, hi = STROKE_RANGE
    if width < lo and thicken:
        r = round((STROKE_TARGET - width) * max(a.shape) / 2)
        if r >= 1:
            return ndimage.grey_dilation(a, footprint=disk(r)), f"thickened strokes (r={r})"
    elif width > hi:  # only down to MNIST's boldest, which the models know well
        r = round((width - hi) * max(a.shape) / 2)
        thinned = ndimage.grey_erosion(a, footprint=disk(r)) if r >= 1 else a
        if r >= 1 and thinned.max() >= 0.5 * a.max():  # never thinned away
            return thinned, f"thinned strokes (r={r})"
    return a, None
