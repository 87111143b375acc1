"""The one path from any image to the 28x28 input the models expect.

MNIST digits are light strokes on a black background, their bounding box
fitted into 20x20 pixels (aspect kept) and placed in a 28x28 frame so that the
center of mass sits at the center. Real input (a canvas, a scan, a photo) has
to be brought to the same form, or a 99% model guesses. Every front end (CLI,
GUI, web server) goes through ``preprocess``; nothing else converts images.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digitrec.errors import ImageError

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)
INK_THRESHOLD = 0.1  # fraction of the ink's peak brightness that still counts as ink
BLANK_CONTRAST = 0.08  # below this peak contrast over the background there is no digit
MIN_INK_PIXELS = 4

ImageLike = str | os.PathLike | bytes | bytearray | Image.Image | np.ndarray


@dataclass
class Preprocessed:
    """The model's input and what was done to get it, for front ends to show."""

    image: np.ndarray  # (28, 28) float32 in [0, 1], light digit on black
    blank: bool = False
    inverted: bool = False
    box: tuple[int, int, int, int] | None = None  # ink bounding box in the source (x0, y0, x1, y1)
    scale: float = 1.0
    source_size: tuple[int, int] = (0, 0)
    steps: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "blank": self.blank,
            "inverted": self.inverted,
            "box": list(self.box) if self.box else None,
            "scale": round(self.scale, 4),
            "source_size": list(self.source_size),
            "steps": self.steps,
        }


def open_image(src: ImageLike) -> Image.Image:
    """Decode a path, bytes, PIL image or array, refusing what cannot or should not be decoded."""
    if isinstance(src, Image.Image):
        img = src
    elif isinstance(src, np.ndarray):
        return _from_array(src)
    else:
        name = "image data" if isinstance(src, (bytes, bytearray)) else str(src)
        if isinstance(src, (bytes, bytearray)):
            if not src:
                raise ImageError("The image is empty (0 bytes)")
            fh: Any = io.BytesIO(src)
        else:
            if not Path(src).is_file():
                raise ImageError(f"{src}: no such file")
            fh = src
        try:
            img = Image.open(fh)
            _check_size(img.size, name)
            img.load()
        except ImageError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{name}: not a readable image ({exc})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name}: the image is truncated or corrupt ({exc})") from None
    _check_size(img.size, "image")
    return img


def _check_size(size: tuple[int, int], name: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: the image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"{name}: {w}x{h} is over the {MAX_PIXELS:,}-pixel limit; scale it down first"
        )


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(f"array of shape {a.shape} is not an image (H, W), (H, W, 3) or (H, W, 4)")
    _check_size((a.shape[1], a.shape[0]), "array")
    if not np.isfinite(a).all():
        raise ImageError("the array has NaN or infinite values")
    if a.dtype != np.uint8:
        a = np.asarray(a, dtype=np.float64)
        if a.max(initial=0) <= 1.0 and a.min(initial=0) >= 0.0:
            a = a * 255.0  # floats in [0, 1]
        a = np.clip(a, 0, 255).round().astype(np.uint8)
    return Image.fromarray(a)


def to_luminance(img: Image.Image) -> np.ndarray:
    """(H, W) float32 in [0, 1]: EXIF rotation applied, transparency flattened.

    A transparent canvas has no background colour of its own: it is composited onto
    whichever of black or white contrasts with the strokes, so white-on-transparent
    and black-on-transparent drawings both stay visible.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3]
        lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        opaque = alpha > 0.5
        ink_is_light = opaque.any() and float(lum[opaque].mean()) > 0.5
        background = 0.0 if ink_is_light else 1.0
        return (lum * alpha + background * (1.0 - alpha)).astype(np.float32)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def border_level(gray: np.ndarray) -> float:
    """The median brightness of the outermost pixels: the background, for a digit that is
    not touching every edge."""
    h, w = gray.shape
    k = max(1, min(h, w) // 20)
    edge = np.concatenate(
        [gray[:k].ravel(), gray[-k:].ravel(), gray[:, :k].ravel(), gray[:, -k:].ravel()]
    )
    return float(np.median(edge))


def center_of_mass(a: np.ndarray) -> tuple[float, float]:
    total = a.sum()
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / total), float((xs * a).sum() / total)


def preprocess(src: ImageLike) -> Preprocessed:
    """Any image -> the 28x28 MNIST-like input and a record of what was done."""
    img = open_image(src)
    gray = to_luminance(img)
    result = Preprocessed(np.zeros((28, 28), np.float32), source_size=img.size)

    background = border_level(gray)
    if background > 0.5:  # dark ink on light paper: make it light on dark, like MNIST
        gray, background = 1.0 - gray, 1.0 - background
        result.inverted = True
        result.steps.append("inverted")
    ink = np.clip(gray - background, 0.0, None)
    peak = float(ink.max())
    if peak < BLANK_CONTRAST or (ink > INK_THRESHOLD * peak).sum() < MIN_INK_PIXELS:
        result.blank = True
        result.steps.append("blank")
        return result
    ink /= peak

    rows = np.flatnonzero((ink > INK_THRESHOLD).any(1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    result.box = (int(x0), int(y0), int(x1), int(y1))
    crop = ink[y0:y1, x0:x1]
    result.steps.append("cropped")

    h, w = crop.shape
    result.scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * result.scale)), max(1, round(w * result.scale))
    resample = Image.Resampling.BOX if result.scale < 1 else Image.Resampling.BILINEAR
    small = np.asarray(
        Image.fromarray(crop.astype(np.float32), mode="F").resize((nw, nh), resample),
        dtype=np.float32,
    )
    small = np.clip(small, 0.0, 1.0)
    result.steps.append(f"fitted into 20x20 (x{result.scale:.3g})")

    cy, cx = center_of_mass(small)
    top, left = round(14 - cy), round(14 - cx)
    top, left = min(max(top, 0), 28 - nh), min(max(left, 0), 28 - nw)
    result.image[top : top + nh, left : left + nw] = small
    result.steps.append("centered by mass")
    return result
