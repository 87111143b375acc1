"""The sheet of paper: a light region lying on a darker desk, found and painted over."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from digitrec.preprocess.ops import fit, grow

SHEET_SHARE = 0.15  # a light region at least this share of the image may be a sheet of paper


SHEET_RADIUS = 0.17  # ... with room for a disk of this radius (a share of the shorter side)


def is_sheet(mask: np.ndarray) -> bool:
    """Whether the "ink" is a sheet of paper on a darker desk: a light region over a
    sixth of the image with room, beside the writing on it, for a disk a third of the
    image's shorter side across.

    A photo of a note lying on a desk has the desk along most of its border, so the
    paper reads as a light mark on a dark ground. A digit's strokes are narrower: a
    stroke as bold as MNIST's boldest (0.28 of the digit) in a digit filling the photo
    holds a disk of radius 0.14 (asked only of photos: blurred 28x28 digits reach 0.25).
    """
    share = float(mask.mean())
    if not SHEET_SHARE <= share < 0.9:  # the whole image light: no desk to tell it by
        return False
    radius = float(ndimage.distance_transform_edt(np.pad(mask, 1)).max())
    return radius >= SHEET_RADIUS * min(mask.shape)


def edge_step(gray: np.ndarray, mask: np.ndarray) -> float:
    """How much brighter the mask's rim is than the ground just outside it: a sheet's
    edge on a desk is a step (about 0.5), the line where a lamp's gradient crosses a
    threshold is not (about 0.01 at the working size)."""
    inner, outer = mask & grow(~mask, 2), ~mask & grow(mask, 2)  # not along the image's edge
    if not inner.any() or not outer.any():
        return 0.0
    return float(np.median(gray[inner]) - np.median(gray[outer]))


def paper_beyond(img: Image.Image, on_paper: Image.Image) -> Image.Image:
    """The paper's colour carried smoothly past its edge: a blur of the paper alone,
    divided by the blur of its mask, at 64 px. A flat fill left a step where the lamp's
    gradient met it, and the step read as a stroke."""
    side = fit(np.zeros(img.size[::-1], np.float32), 64).shape[::-1]
    colour = np.asarray(img.resize(side, Image.Resampling.BOX), np.float32).reshape(
        side[1], side[0], -1
    )
    weight = np.asarray(on_paper.resize(side, Image.Resampling.BOX), np.float32)[..., None] / 255
    sigma = (8, 8, 0)
    spread = ndimage.gaussian_filter(colour * weight, sigma, mode="nearest")
    reach = ndimage.gaussian_filter(weight, sigma, mode="nearest")
    inside = weight[..., 0] > 0.5
    mean = colour[inside].mean(0) if inside.any() else colour.reshape(-1, colour.shape[2]).mean(0)
    fill = np.where(reach > 0.01, spread / np.maximum(reach, 1e-6), mean)
    fill = np.clip(fill, 0, 255).round().astype(np.uint8)
    fill_img = Image.fromarray(fill[..., 0] if img.mode == "L" else fill, img.mode)
    return fill_img.resize(img.size, Image.Resampling.BILINEAR)
