"""Decoding: any image (file, bytes, PIL image, array) to an upright 8-bit PIL image,
within the limits (pixels per image and per request, and only the formats listed in
``FORMATS``), then its channels reduced and flattened to luminance.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageChops, ImageOps, UnidentifiedImageError

from digitrec.errors import ImageError, ImageTooLarge

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # an image file digitrec takes in (upload, correction)


ImageLike = str | os.PathLike | bytes | bytearray | Image.Image | np.ndarray


@dataclass(frozen=True)
class Format:
    pil: str  # Pillow's name, for Image.open(formats=...)
    name: str  # what people call it
    mime: str
    suffixes: tuple[str, ...]


# The only formats decoded, by every front end; every list shown to people comes from here.
# Pillow would otherwise try ~40 (EPS runs Ghostscript on the upload). JPEG includes MPO,
# the multi-picture JPEG of phone cameras (Pillow opens it through the JPEG plugin).
FORMATS = (
    Format("PNG", "PNG", "image/png", (".png",)),
    Format("JPEG", "JPEG", "image/jpeg", (".jpg", ".jpeg")),
    Format("BMP", "BMP", "image/bmp", (".bmp",)),
    Format("GIF", "GIF", "image/gif", (".gif",)),
    Format("WEBP", "WebP", "image/webp", (".webp",)),
    Format("TIFF", "TIFF", "image/tiff", (".tif", ".tiff")),
)


PIL_FORMATS = [f.pil for f in FORMATS]


FORMAT_NAMES = ", ".join(f.name for f in FORMATS[:-1]) + f" and {FORMATS[-1].name}"


def size_text(n: int) -> str:
    """A size as people read it: 10 MB, 512 KB, 300 bytes (binary units, as the limits)."""
    for unit, k in (("MB", 2**20), ("KB", 2**10)):
        if n >= k:
            v = n / k
            return f"{v:.0f} {unit}" if v >= 10 or v == int(v) else f"{v:.1f} {unit}"
    return f"{n} bytes"


def over_limit(what: str, size: int | None, limit: int) -> str:
    """The one wording of a refused size: the CLI's, the server's and the store's."""
    if size is None or size_text(size) == size_text(limit):
        return f"{what} is over the {size_text(limit)} limit"
    return f"{what} is {size_text(size)}, over the {size_text(limit)} limit"


def empty(name: str) -> str:
    return f"{name} is empty (0 bytes)"


# The files front ends offer to open (a folder given to `predict`, the GUI's file dialog).
IMAGE_SUFFIXES = tuple(s for f in FORMATS for s in f.suffixes)


class PixelBudget:
    """The pixels one request may still decode, over all its images: images each under
    the per-image limit can still add up to a minute of a server worker's time."""

    def __init__(self, total: int) -> None:
        self.total = self.left = total

    def take(self, size: tuple[int, int], name: str) -> None:
        w, h = size
        if w * h > self.left:
            raise ImageTooLarge(
                f"{name}: its {w}x{h} pixels take the request over its budget of "
                f"{self.total:,} decoded pixels; send fewer or smaller images"
            )
        self.left -= w * h


def decode(
    src: ImageLike,
    max_pixels: int | None = None,
    at_least: int = 0,
    budget: PixelBudget | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode a path, bytes, PIL image or array, upright, refusing what cannot or should
    not be decoded; returns the image and the upright size of the full image.

    The pixel limit is checked on the header, before decoding: a 50,000 x 50,000 PNG of a
    few kilobytes (a decompression bomb) is refused without allocating its pixels.
    ``at_least``: a JPEG over twice this on its longer side is decoded at 1/2, 1/4 or 1/8
    scale (libjpeg scales in the DCT and skips most of the work), its longer side still
    at least ``at_least``; the size returned is then larger than the image's.
    ``budget``: what the image decodes to is taken from it before decoding.
    """
    limit = max_pixels or MAX_PIXELS
    if isinstance(src, Image.Image):
        img = src
    elif isinstance(src, np.ndarray):
        if budget is not None and src.ndim >= 2:
            budget.take((src.shape[1], src.shape[0]), "array")
        img = _from_array(src, limit)
    else:
        name = "The uploaded image" if isinstance(src, (bytes, bytearray)) else str(src)
        if isinstance(src, (bytes, bytearray)):
            if not src:
                raise ImageError(empty(name))
            fh: Any = io.BytesIO(src)
        else:
            if not Path(src).is_file():
                raise ImageError(f"{src}: no such file")
            if Path(src).stat().st_size == 0:
                raise ImageError(empty(name))
            fh = src
        try:
            img = Image.open(fh, formats=PIL_FORMATS)
            _check_size(img.size, name, limit)
            full = img.size
            if at_least and max(full) >= 2 * at_least:
                f = at_least / max(full)
                img.draft(None, (max(1, ceil(full[0] * f)), max(1, ceil(full[1] * f))))
            if budget is not None:
                budget.take(img.size, name)  # the size draft() left: what load() decodes
            img.load()
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"{name}: {exc}") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name} is not a readable image ({FORMAT_NAMES} are read)") from None
        except Exception as exc:  # any decoder's failure on untrusted bytes: corrupt input
            raise ImageError(f"{name} is a truncated or corrupt image ({exc})") from None
        _check_size(img.size, "image", limit)
        return upright(img, full)
    _check_size(img.size, "image", limit)
    return upright(img, img.size)


def upright(img: Image.Image, full: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """EXIF orientation applied (a phone's portrait photo is stored sideways), to the image
    and to its full size; the image itself when there is none to apply (PIL's
    ``exif_transpose`` then returns a copy, tens of ms for a 12-megapixel photo)."""
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation not in range(2, 9):
        return img, full
    return ImageOps.exif_transpose(img), (full[::-1] if orientation >= 5 else full)


def _check_size(size: tuple[int, int], name: str, limit: int) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: the image has no pixels ({w}x{h})")
    if w * h > limit:
        raise ImageTooLarge(
            f"{name}: {w}x{h} is over the {limit:,}-pixel limit; scale it down first"
        )


def _from_array(a: np.ndarray, limit: int) -> Image.Image:
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(f"array of shape {a.shape} is not an image (H, W), (H, W, 3) or (H, W, 4)")
    _check_size((a.shape[1], a.shape[0]), "array", limit)
    if not np.isfinite(a).all():
        raise ImageError("the array has NaN or infinite values")
    return Image.fromarray(_to_uint8(a))


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (floats, or a 0/1 mask) and values above 255 (16-bit scans,
    12-bit sensors) scaled to 0..255; anything else taken as 8-bit values and clipped."""
    if a.dtype == np.uint8:
        return a
    a = np.asarray(a, dtype=np.float64)
    top = a.max(initial=0)
    if top <= 1.0 and a.min(initial=0) >= 0.0:
        a = a * 255.0
    elif top > 255:
        a = a * (255.0 / top)
    return np.clip(a, 0, 255).round().astype(np.uint8)


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as 8-bit grey, scaled rather than clipped.

    PIL's own conversion clips at 255, so a 16-bit scan's greys all turned white and its
    digit read as blank.
    """
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return Image.fromarray(_to_uint8(np.asarray(img)))
    return img


def drop_unused_channels(img: Image.Image) -> Image.Image:
    """An opaque alpha channel dropped, and equal colour channels made one grey channel.

    A browser canvas is always RGBA, even when opaque and black on white: four channels
    made resizing and flattening a third of the pipeline's time. The grey value is the
    shared channel value (PIL's luminance weights sum to one in fixed point).
    """
    if img.mode == "RGBA" and sys.byteorder == "little":
        # One 32-bit word a pixel: an opaque grey pixel is v * 0x010101 + 0xFF000000 (on
        # a 160 px canvas a third of the time of splitting and comparing channels in PIL).
        words = np.frombuffer(img.tobytes(), np.uint32)
        grey = words & 0xFF
        if np.array_equal(words, grey * 0x010101 + 0xFF000000):
            return Image.fromarray(grey.astype(np.uint8).reshape(img.height, img.width))
    if img.mode == "RGBA" and img.getchannel("A").getextrema()[0] == 255:
        img = img.convert("RGB")
    if img.mode == "RGB":
        r, g, b = img.split()
        same = ImageChops.difference(r, g).getbbox() is None
        if same and ImageChops.difference(g, b).getbbox() is None:
            return r
    return img


def flatten(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W) luminance in [0, 1], and (H, W, 3) colour when the image has any.

    A transparent canvas has no background colour of its
    own: it is composited onto whichever of black or white contrasts with the strokes,
    so white-on-transparent and black-on-transparent drawings both stay visible.
    """
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        lum = rgba[..., :3] @ weights
        opaque = alpha[..., 0] > 0.5
        background = 0.0 if opaque.any() and float(lum[opaque].mean()) > 0.5 else 1.0
        rgb = rgba[..., :3] * alpha + background * (1.0 - alpha)
    elif img.mode in ("L", "1", "I", "F") or img.mode.startswith("I;16"):
        return np.asarray(eight_bit(img).convert("L"), dtype=np.float32) / 255.0, None
    else:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    gray = rgb @ weights
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    colourful = max(np.abs(r - g).max(initial=0), np.abs(g - b).max(initial=0)) >= 0.02
    return gray.astype(np.float32), (rgb if colourful else None)
