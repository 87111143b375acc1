"""A digit that fills its image: cropped tight in an editor, a scanned form's cell, a
small postal scan. Its strokes touch the frame on every side, and the stages after this
one take ink at the frame for marks from beyond it (a sheet's edge, a ruled line, uneven
light) and remove it. Given the margin of background MNIST's digits have, it is read as
they are.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from digitrec.preprocess.ink import dark_ink

FRAME_SOURCE = 256  # only images at most this large (longer side, source px) are judged
FRAME_CONTRAST = 0.1  # ink: this share of the way from the background to the brightest ink
FRAME_MARGIN = 0.2  # the margin added, as a share of the longer side (MNIST: 4 px of 20)
# Strokes are solid or faint, and few pixels lie between; in haze or fog most do.
HAZE = (0.1, 0.5)  # levels between these shares of the range count as haze
MAX_HAZE = 0.4
MIN_AT_FRAME = 0.8  # the share of the ink in pieces that touch the frame
MAX_INK = 0.8  # a digit, even stretched into a small cell, leaves a fifth to its paper


def background(gray: np.ndarray) -> float:
    """The level of the background, on the side ``dark_ink`` says it is: the 2nd
    percentile of the image's levels, or the 98th (dark ink)."""
    return float(np.quantile(gray, 0.98 if dark_ink(gray) else 0.02))


def fills_frame(gray: np.ndarray) -> bool:
    """Whether the ink touches all four sides of the image and nearly all of it is in
    pieces that touch the frame (and it is not haze)."""
    bg = background(gray)
    dev = np.abs(gray - bg)
    if dev.max() <= 0:
        return False
    dev /= dev.max()
    ink = dev > FRAME_CONTRAST
    haze = float(((dev > HAZE[0]) & (dev < HAZE[1])).mean())
    # A side is touched by ink within a pixel of it that leaves a trace at the frame
    # itself: a crop resampled (a form's cell) fades at its edge.
    touch = dev > FRAME_CONTRAST / 4
    for outer, band in ((touch[0], ink[:2]), (touch[-1], ink[-2:]),
                        (touch[:, 0], ink[:, :2]), (touch[:, -1], ink[:, -2:])):  # fmt: skip
        if not (outer.any() and band.any()):
            return False
    if haze > MAX_HAZE:
        return False
    if ink.mean() > MAX_INK:  # the "ink" is the paper: the polarity was a guess
        return False
    # A digit inside the frame with marks reaching it (a sheet's edge, a ruled line) is
    # not one that fills it: then most of the ink lies in pieces that do not touch it.
    ring = np.zeros_like(ink)  # a faint trace at the frame joins the piece it fades from
    ring[[0, -1]], ring[:, [0, -1]] = True, True
    labels, _ = ndimage.label(ink | (touch & ring), structure=np.ones((3, 3), bool))
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return float(np.isin(labels[ink], edge).mean()) >= MIN_AT_FRAME


def add_margin(
    gray: np.ndarray, rgb: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The image with a margin of its background on every side, and the margin's width."""
    pad = max(1, round(FRAME_MARGIN * max(gray.shape)))
    bg = background(gray)
    if rgb is not None:  # the colour of the pixels nearest the background's level
        near = np.abs(gray - bg) <= np.quantile(np.abs(gray - bg), 0.05)
        colour = rgb[near].mean(0)
        rgb = np.stack([np.pad(rgb[..., c], pad, constant_values=float(colour[c]))
                        for c in range(3)], axis=-1)  # fmt: skip
    return np.pad(gray, pad, constant_values=bg), rgb, pad
