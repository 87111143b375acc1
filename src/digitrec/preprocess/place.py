"""Fit and centre: the digit in 20x20, placed in 28x28 by its centre of mass, optionally
deskewed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from digitrec.preprocess.ops import center_of_mass, fit


def deskew(img: np.ndarray) -> np.ndarray:
    """Shear the digit upright using its second-order moments (optional, off by default:
    MNIST itself is not deskewed)."""
    total = img.sum()
    if total <= 0:
        return img
    ys, xs = np.indices(img.shape)
    cy, cx = (ys * img).sum() / total, (xs * img).sum() / total
    mu11 = ((ys - cy) * (xs - cx) * img).sum() / total
    mu02 = ((ys - cy) ** 2 * img).sum() / total
    if mu02 < 1e-3:
        return img
    alpha = mu11 / mu02
    matrix = np.array([[1, 0], [alpha, 1]])
    offset = np.array([cy, cx]) - matrix @ np.array([cy, cx])
    out = ndimage.affine_transform(img, matrix, offset=offset, order=1)
    return np.clip(out, 0, 1).astype(np.float32)


def place(digit: np.ndarray) -> np.ndarray:
    """Put a digit (at most 20x20) into 28x28 with its centre of mass at the centre."""
    out = np.zeros((28, 28), np.float32)
    nh, nw = digit.shape
    cy, cx = center_of_mass(digit)
    top = min(max(round(14 - cy), 0), 28 - nh)
    left = min(max(round(14 - cx), 0), 28 - nw)
    out[top : top + nh, left : left + nw] = digit
    return out


def recenter(img: np.ndarray) -> np.ndarray:
    """Crop, fit and centre an already 28x28 image again (after deskewing moved it)."""
    rows, cols = np.flatnonzero(img.any(1)), np.flatnonzero(img.any(0))
    if not len(rows):
        return img
    crop = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return place(np.clip(fit(crop, 20, enlarge=False), 0, 1))
