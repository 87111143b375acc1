"""Polarity and ink: which side is ink, and how much of each pixel, on even backgrounds,
under uneven light (lamps, shadows, grey paper) and in colour.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from digitrec.preprocess.ops import border_level, border_pixels, clear_mass, fit, quantiles, resize

INK_THRESHOLD = 0.1  # fraction of the ink's peak brightness that still counts as ink


BLANK_CONTRAST = 0.08  # below this peak contrast over the background there is no digit
FAINT_CONTRAST = 0.04  # ... unless faint strokes stand this far out, and clear of the noise
FAINT_OVER_NOISE = 6  # times the border's 90th percentile: a blank sheet's noise and texture


def dark_ink(gray: np.ndarray, faint: bool = True) -> bool:
    """Whether the digit is darker than its (evenly lit) background.

    The background level is the border's median; the ink is whichever side of it holds
    more clear deviation. That works for white, grey or dim paper alike, and for a digit
    covering 0.2% of a large canvas, where a rule like "border brighter than 0.5" or a
    histogram percentile fails. With ``faint``, ink that nothing clears the margin of
    is judged at its own contrast.
    """
    dev = gray - border_level(gray)
    dark, light = clear_mass(-dev), clear_mass(dev)
    if faint and dark == light == 0.0:
        # Faint ink (a pencil, a light scan): nothing clears the margin, so the sides are
        # weighed at half the ink's own contrast, measured through a 3x3 mean over the noise.
        smooth = ndimage.uniform_filter(dev, 3)
        margin = 0.5 * max(float(smooth.max()), float(-smooth.min()))
        dark, light = clear_mass(-dev, margin), clear_mass(dev, margin)
    return dark > light


def faint_strokes(ink: np.ndarray) -> bool:
    """Whether ink under ``BLANK_CONTRAST`` is still strokes (a light pencil, a pale scan).
    A 3x3 mean keeps a stroke's level and averages the noise away; a blank sheet's noise,
    texture or desk reaches about as high inside the image as on its border."""
    smooth = ndimage.uniform_filter(ink, 3)
    peak = float(smooth.max())
    return (
        peak > FAINT_CONTRAST
        and peak > FAINT_OVER_NOISE * quantiles(border_pixels(smooth), [0.9])[0]
    )


def dark_ink_local(gray: np.ndarray) -> bool:
    """``dark_ink`` for unevenly lit images: deviations from a local median.

    A median is blind to polarity (strokes and the holes between them are both a
    minority in a large window), so unlike an opening or closing it does not mistake a
    digit's loops for light strokes. The median is taken on a 32 px thumbnail (cheap at
    any size), the deviations at the working size, beyond a margin of 0.05: at 32 px a
    ballpoint's line in a photo vanished, the vote went to the lamp's gradient, and the
    paper inside an 8's loops became its light "ink".
    """
    small = fit(gray, 32, enlarge=False)
    local = ndimage.median_filter(small, size=9, mode="nearest")
    dev = gray - (resize(local, gray.shape[::-1]) if local.shape != gray.shape else local)
    return clear_mass(-dev, 0.05) > clear_mass(dev, 0.05)


def uneven(gray: np.ndarray) -> bool:
    """Whether the border varies enough (lighting, shadow, paper) to need a background map."""
    lo, hi = quantiles(border_pixels(gray), [0.1, 0.9])
    return bool(hi - lo > 0.08)


def background_map(gray: np.ndarray) -> np.ndarray:
    """A smooth estimate of the (dark) background under light ink.

    A grey-level opening removes every structure narrower than the kernel (the strokes)
    and keeps what is wide: lighting gradients, shadows, grey paper. It runs on a thumbnail
    of at most 96 px, so it costs the same for any image, and is sharp enough there to
    follow the edge of a shadow.

    Near the edge the window runs off the thumbnail, so the thumbnail is padded: the
    plane that best fits it carried on, plus each edge pixel's departure from that plane.
    Under a lamp's gradient that is the gradient itself, up to the edge; repeating the
    edge pixel instead cut the gradient's peak off for half a window, and the band left
    there outweighed a small digit (ink residue on blank lamp-lit paper 0.04-0.07, now
    under 0.01).
    """
    h, w = gray.shape
    small = fit(gray, 96, enlarge=False)
    k = max(3, round(0.1 * max(small.shape)) | 1)
    pad = k  # as far as the opening (k - 1) and the 3x3 mean reach
    opened = ndimage.grey_opening(pad_along_plane(small, pad), size=(k, k), mode="nearest")
    opened = ndimage.uniform_filter(opened, size=3, mode="nearest")[pad:-pad, pad:-pad]
    return resize(opened, (w, h)) if opened.shape != gray.shape else opened


def pad_along_plane(a: np.ndarray, pad: int) -> np.ndarray:
    """``a`` padded by ``pad`` pixels: its least-squares plane extended, plus the edge's
    residual from that plane repeated outward."""
    h, w = a.shape
    x = np.arange(-pad, w + pad, dtype=np.float32) - (w - 1) / 2  # centred: on a full grid
    y = np.arange(-pad, h + pad, dtype=np.float32) - (h - 1) / 2  # the fit is per axis
    xi, yi = x[pad : pad + w], y[pad : pad + h]
    bx = float(a.mean(0) @ xi) / max(float(xi @ xi), 1e-6)
    by = float(a.mean(1) @ yi) / max(float(yi @ yi), 1e-6)
    plane = float(a.mean()) + by * y[:, None] + bx * x[None, :]
    return np.pad(a - plane[pad : pad + h, pad : pad + w], pad, mode="edge") + plane


def hue_distance(rgb: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """How far each pixel's colour lies from the line of the paper's colour at every
    brightness, in [0, 1].

    A lamp's gradient or a shadow scales the paper's colour; it does not turn it. The
    plain distance to the paper's colour counted that scaling as colour: on a tinted
    photo the bright and dark corners outweighed a small digit and became the "digit".
    """
    diff = rgb - paper
    norm = float(np.linalg.norm(paper))
    u = paper / norm if norm > 1e-3 else np.zeros_like(paper)  # black paper: plain distance
    across = diff - (diff @ u)[..., None] * u
    return np.linalg.norm(across, axis=2) / np.sqrt(3)


def ink_on_uneven(gray: np.ndarray, dark: bool) -> np.ndarray:
    """The ink of an unevenly lit image, dark ink on paper or light strokes on a dark
    ground, measured against a local background estimate."""
    if dark:
        # Light falls on paper and ink alike: divide by the paper's brightness
        # (reflectance) rather than subtract, so ink in a shadow keeps its weight.
        paper = np.maximum(1.0 - background_map(1.0 - gray), 0.05)
        return np.clip(1.0 - gray / paper, 0.0, None)
    return np.clip(gray - background_map(gray), 0.0, None)
