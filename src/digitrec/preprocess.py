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
import sys
from dataclasses import dataclass, field
from math import ceil, floor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageChops, ImageOps, UnidentifiedImageError
from scipy import ndimage

from digitrec.errors import ImageError, ImageTooLarge

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)
INK_THRESHOLD = 0.1  # fraction of the ink's peak brightness that still counts as ink
BLANK_CONTRAST = 0.08  # below this peak contrast over the background there is no digit
MIN_INK_PIXELS = 4

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
    # Read on a sheet of paper found lying on a darker ground: already a closer look at the
    # photo, so a blank answer there is not looked at again (the steps say so for people).
    on_sheet: bool = False

    def info(self) -> dict[str, Any]:
        return {
            "blank": self.blank,
            "inverted": self.inverted,
            "box": list(self.box) if self.box else None,
            "scale": round(self.scale, 4),
            "source_size": list(self.source_size),
            "steps": self.steps,
        }


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
        name = "The uploaded data" if isinstance(src, (bytes, bytearray)) else str(src)
        if isinstance(src, (bytes, bytearray)):
            if not src:
                raise ImageError("The image is empty (0 bytes)")
            fh: Any = io.BytesIO(src)
        else:
            if not Path(src).is_file():
                raise ImageError(f"{src}: no such file")
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


def dark_ink(gray: np.ndarray) -> bool:
    """Whether the digit is darker than its (evenly lit) background.

    The background level is the border's median; the ink is whichever side of it holds
    more clear deviation. That works for white, grey or dim paper alike, and for a digit
    covering 0.2% of a large canvas, where a rule like "border brighter than 0.5" or a
    histogram percentile fails.
    """
    dev = gray - border_level(gray)
    return clear_mass(-dev) > clear_mass(dev)


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


# A fine pen's line breaks where strokes meet: pieces this close (a share of the image's
# side) are one digit. Chosen on validation renders (docs/results.md#measured).
PEN_GAP = 0.06


def keep_digit(mask: np.ndarray, link: np.ndarray | None = None) -> np.ndarray:
    """The connected components that make up the digit.

    Drops specks (tiny next to the largest component), marks that touch the image
    border while something larger does not (paper edges, a finger, a neighbour's
    stroke) unless they come within ``PEN_GAP`` of the digit, and ruled lines running
    from the left edge to the right. ``link``, a
    fainter mask containing ``mask``, joins pieces that faint ink connects (a fine pen's
    line dips below the threshold here and there): they are judged as one.
    """
    h, w = mask.shape
    labels, n = ndimage.label(mask if link is None else link, structure=np.ones((3, 3)))
    if n <= 1:  # one piece (most drawings): it is the digit, whatever it touches
        return mask
    areas = np.bincount(labels[mask], minlength=n + 1)[1:]
    # Each piece is where its ink above the threshold is: faint ink links, nothing more.
    boxes = ndimage.find_objects(np.where(mask, labels, 0), max_label=n)
    if link is not None:
        labels[~mask] = 0  # only the threshold's pixels are returned
    ids = [i for i in range(n) if boxes[i] is not None]
    if not ids:
        return mask
    margin = max(1, round(0.01 * max(h, w)))

    def touches(sl) -> bool:
        ys, xs = sl
        return (
            ys.start < margin or xs.start < margin or ys.stop > h - margin or xs.stop > w - margin
        )

    def ruled_line(sl) -> bool:
        ys, xs = sl
        return xs.start < 3 * margin and xs.stop > w - 3 * margin and (ys.stop - ys.start) < 0.1 * h

    inner = [i for i in ids if not touches(boxes[i]) and not ruled_line(boxes[i])]
    unruled = [i for i in ids if not ruled_line(boxes[i])] or ids
    biggest = max(unruled, key=lambda i: areas[i])
    # An inner component is the digit unless it is a speck next to a large mark that
    # touches the border: then that mark is the digit, touched by a smudge or the edge.
    candidates = (
        inner if inner and max(areas[i] for i in inner) >= 0.3 * areas[biggest] else unruled
    )
    main = max(candidates, key=lambda i: areas[i])
    keep = np.zeros(n + 1, dtype=bool)
    keep[[i + 1 for i in candidates if areas[i] >= 0.15 * areas[main]]] = True

    # Pieces of a broken stroke lie near the digit; specks and smudges lie apart. "Near"
    # grows with what is kept: the dashes of a fine pen's loop reach the stem one by one.
    def extent(i: int) -> tuple[int, int, int, int]:
        ys, xs = boxes[i]
        return ys.start, ys.stop, xs.start, xs.stop

    # Pieces of a broken stroke lie near the digit; specks and smudges lie apart. "Near" is
    # within the kept box grown by a quarter, or within a pen's gap of kept ink (a fine
    # pen breaks where strokes meet), and grows with what is kept: the dashes of a loop
    # reach the stem one by one. Marks touching the border join only by the gap: a 9's
    # tail running off a tight canvas does, a paper edge across the page does not.
    y0, y1, x0, x1 = extent(main)
    small = 0.005 * areas[main]
    pieces = [i for i in candidates if not keep[i + 1] and areas[i] >= small]
    edge = [i for i in unruled if i not in candidates and areas[i] >= small]
    gap = max(2, round(PEN_GAP * max(h, w)))
    while pieces or edge:
        close = set(np.unique(labels[grow(keep[labels], gap)]).tolist())
        py, px = 0.25 * (y1 - y0), 0.25 * (x1 - x0)
        near = [i for i in edge if i + 1 in close]
        for i in pieces:
            a0, a1, b0, b1 = extent(i)
            inside = a1 >= y0 - py and a0 <= y1 + py and b1 >= x0 - px and b0 <= x1 + px
            if inside or i + 1 in close:
                near.append(i)
        if not near:
            break
        for i in near:
            keep[i + 1] = True
            a0, a1, b0, b1 = extent(i)
            y0, y1, x0, x1 = min(y0, a0), max(y1, a1), min(x0, b0), max(x1, b1)
        pieces = [i for i in pieces if not keep[i + 1]]
        edge = [i for i in edge if not keep[i + 1]]
    return keep[labels]


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


def remove_lines(ink: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Erase straight lines running edge to edge: ruled paper, a fold, a stripe.

    A row or column counts when the ink covers at least 60% of it and touches both ends
    (a stroke crossing it breaks it up). Returns the ink without the lines and the
    bridges (None when there was no line): erased pixels between stroke ends on either
    side of a line, so that ``keep_digit`` sees a digit cut by a line as one piece. If
    erasing would leave almost nothing, the "line" was the digit (a tightly cropped 1)
    and the image is left alone.
    """
    cols = (mask.mean(0) >= 0.6) & mask[0] & mask[-1]
    rows = (mask.mean(1) >= 0.6) & mask[:, 0] & mask[:, -1]
    if not cols.any() and not rows.any():
        return ink, None
    out, bridges = ink.copy(), np.zeros_like(mask)
    for band, transpose in ((cols, False), (rows, True)):
        if band.any():
            views = (out.T, mask.T, bridges.T) if transpose else (out, mask, bridges)
            erase_band(*views, ndimage.binary_dilation(band, iterations=1))
    left = (mask & (out > 0)).sum()
    return (out, bridges) if left >= max(MIN_INK_PIXELS, 0.2 * mask.sum()) else (ink, None)


def erase_band(ink: np.ndarray, mask: np.ndarray, bridges: np.ndarray, band: np.ndarray) -> None:
    """Erase the columns in ``band`` in place and mark, in ``bridges``, the rows of each
    run of them that have ink (``mask``) just left and just right (within the run's width in
    height, as a slanted stroke leaves at a different height than it entered)."""
    ink[:, band] = 0.0
    labels, _ = ndimage.label(band)
    for (run,) in ndimage.find_objects(labels):
        a, b = run.start, run.stop
        if a == 0 or b == ink.shape[1]:
            continue
        left = ndimage.maximum_filter1d(mask[:, a - 1], b - a + 1)
        right = ndimage.maximum_filter1d(mask[:, b], b - a + 1)
        bridges[:, a:b] = (left & right)[:, None]


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
LINK_LEVEL = 0.5  # ink above this share of the threshold links pieces of one stroke
FAINT_LEVEL = 0.9  # a 20x20 digit whose ink's 90th percentile is below this is brightened
STROKE_MIN_SOURCE = 40  # px: digits smaller than this in the source are left as drawn
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


def disk(r: int) -> np.ndarray:
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= r * r + r


def normalize_stroke(a: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Thicken hairlines and thin marker strokes to MNIST's pen width (at 80 px, the
    width measured at 40)."""
    small = np.clip(fit(a, STROKE_MEASURE_SIDE), 0, 1)
    kept = np.count_nonzero(small > 0.5) / (small.size / a.size)
    if kept < STROKE_KEPT * np.count_nonzero(a > 0.5):  # hairlines faded away when halved
        small = a
    width = stroke_width(small) / max(small.shape)
    if width <= 0:
        return a, None
    lo, hi = STROKE_RANGE
    if width < lo:
        r = round((STROKE_TARGET - width) * max(a.shape) / 2)
        if r >= 1:
            return ndimage.grey_dilation(a, footprint=disk(r)), f"thickened strokes (r={r})"
    elif width > hi:  # only down to MNIST's boldest, which the models know well
        r = round((width - hi) * max(a.shape) / 2)
        thinned = ndimage.grey_erosion(a, footprint=disk(r)) if r >= 1 else a
        if r >= 1 and thinned.max() >= 0.5 * a.max():  # never thinned away
            return thinned, f"thinned strokes (r={r})"
    return a, None


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


def center_of_mass(a: np.ndarray) -> tuple[float, float]:
    total = a.sum()
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / total), float((xs * a).sum() / total)


def place(digit: np.ndarray) -> np.ndarray:
    """Put a digit (at most 20x20) into 28x28 with its centre of mass at the centre."""
    out = np.zeros((28, 28), np.float32)
    nh, nw = digit.shape
    cy, cx = center_of_mass(digit)
    top = min(max(round(14 - cy), 0), 28 - nh)
    left = min(max(round(14 - cx), 0), 28 - nw)
    out[top : top + nh, left : left + nw] = digit
    return out


WORK_SIDE = 128  # larger inputs are area-averaged down first: 20x20 is the goal anyway
# A large JPEG (a phone photo) is decoded at a reduced scale down to this longer side:
# 8x the work size, so a digit 3% of the frame across still has 30 px for the second look.
DECODE_SIDE = 1024
CLOSER_SIDE = 512  # a photo read blank at WORK_SIDE is looked at again at this size
REFINE_BELOW = 28  # a digit smaller than this (work pixels) is looked at again, cropped
SHEET_SHARE = 0.15  # a light region at least this share of the image may be a sheet of paper
SHEET_RADIUS = 0.17  # ... with room for a disk of this radius (a share of the shorter side)


def _refine(
    full: Image.Image, first: Preprocessed, deskew_digit: bool, normalize_strokes: bool
) -> Preprocessed | None:
    """The pipeline again on the source cropped to the digit's box plus half its size
    each way (enough background for polarity and lighting), mapped back to the source."""
    fx, fy = _decoded_per_source(full, first)
    sx0, sy0, sx1, sy1 = first.box  # type: ignore[misc]
    x0, y0, x1, y1 = floor(sx0 * fx), floor(sy0 * fy), ceil(sx1 * fx), ceil(sy1 * fy)
    m = max(x1 - x0, y1 - y0) // 2 + 2
    box = (max(0, x0 - m), max(0, y0 - m), min(full.size[0], x1 + m), min(full.size[1], y1 + m))
    again = preprocess(full.crop(box), deskew_digit=deskew_digit,
                       normalize_strokes=normalize_strokes, refine=False)  # fmt: skip
    if again.blank or again.box is None:
        return None
    note = f"refined on the source around the digit ({box[2] - box[0]}x{box[3] - box[1]} px)"
    return _map_back(again, first, box[:2], (fx, fy), note)


def _decoded_per_source(full: Image.Image, first: Preprocessed) -> tuple[float, float]:
    """Decoded pixels per source pixel: below 1 when a large JPEG was decoded at reduced
    scale."""
    return full.size[0] / first.source_size[0], full.size[1] / first.source_size[1]


def _map_back(
    again: Preprocessed,
    first: Preprocessed,
    origin: tuple[int, int],
    factors: tuple[float, float],
    note: str,
) -> Preprocessed:
    """A second look's record in the first look's terms: its box (found in a crop of the
    decoded image at ``origin``) in source coordinates, its scale per source pixel."""
    (fx, fy), sw, sh = factors, *first.source_size
    if again.box is not None:
        bx0, by0, bx1, by1 = again.box
        bx0, by0, bx1, by1 = bx0 + origin[0], by0 + origin[1], bx1 + origin[0], by1 + origin[1]
        again.box = (min(floor(bx0 / fx), sw - 1), min(floor(by0 / fy), sh - 1),
                     min(ceil(bx1 / fx), sw), min(ceil(by1 / fy), sh))  # fmt: skip
    again.scale *= fx
    again.source_size = first.source_size
    again.steps = [*first.steps, note, *again.steps]
    return again


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


def _on_sheet(
    full: Image.Image,
    first: Preprocessed,
    mask: np.ndarray,
    deskew_digit: bool,
    normalize_strokes: bool,
) -> Preprocessed:
    """The pipeline again on the sheet alone: the decoded image cropped to the sheet, the
    desk in its corners (a sheet lies at an angle) painted over with the paper's colour."""
    sheet = shrink(ndimage.binary_fill_holes(mask), max(1, round(0.02 * max(mask.shape))))
    if not sheet.any():
        return _blank(first)
    rows, cols = np.flatnonzero(sheet.any(1)), np.flatnonzero(sheet.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    fx, fy = _decoded_per_source(full, first)
    kx = full.size[0] / mask.shape[1]  # decoded pixels per work pixel
    ky = full.size[1] / mask.shape[0]
    box = (floor(x0 * kx), floor(y0 * ky), min(ceil(x1 * kx), full.size[0]),
           min(ceil(y1 * ky), full.size[1]))  # fmt: skip
    crop = eight_bit(full.crop(box))  # a 16-bit scan scaled, not clipped white
    crop = crop.convert("L" if crop.mode in ("L", "LA", "1") else "RGB")
    on_paper = Image.fromarray(sheet[y0:y1, x0:x1].astype(np.uint8) * 255).resize(
        crop.size, Image.Resampling.BILINEAR
    )
    again = preprocess(Image.composite(crop, paper_beyond(crop, on_paper), on_paper),
                       deskew_digit=deskew_digit, normalize_strokes=normalize_strokes)  # fmt: skip
    note = f"a sheet of paper on a darker ground: read on it ({crop.size[0]}x{crop.size[1]} px)"
    again = _map_back(again, first, box[:2], (fx, fy), note)
    again.on_sheet = True
    return again


def preprocess(
    src: ImageLike,
    robust: bool = True,
    deskew_digit: bool = False,
    max_pixels: int | None = None,
    normalize_strokes: bool = True,
    refine: bool = True,
    budget: PixelBudget | None = None,
) -> Preprocessed:
    """Any image -> the 28x28 MNIST-like input and a record of what was done.

    ``robust=False`` is the textbook pipeline (invert, crop, fit, centre) and exists so
    the robustness benchmark can show what each robust step is worth.
    ``normalize_strokes`` thickens hairlines and thins blobs towards MNIST's pen width,
    for digits drawn well above MNIST's size (at MNIST's size a "hairline" is noise);
    see docs/results.md#measured.
    """
    img, source_size = decode(src, max_pixels, at_least=DECODE_SIDE, budget=budget)
    first = _read(img, source_size, WORK_SIDE, robust, deskew_digit, normalize_strokes, refine)
    if first.blank and robust and refine and max(img.size) > CLOSER_SIDE and not first.on_sheet:
        # A digit a few percent of a photo's height is a few faint pixels at 128 px, too
        # few to tell from the paper's grain: look again, at 512 px, before saying "no
        # digit" (the digit found there is then refined on the photo itself).
        closer = _read(img, source_size, CLOSER_SIDE, robust, deskew_digit, normalize_strokes,
                       refine)  # fmt: skip
        if not closer.blank:
            at = int(closer.steps[0].startswith("decoded"))  # after "decoded at 1/2 scale"
            closer.steps.insert(at, f"nothing at {WORK_SIDE} px: looked again at {CLOSER_SIDE} px")
            return closer
    return first


def _read(
    img: Image.Image,
    source_size: tuple[int, int],
    work_side: int,
    robust: bool,
    deskew_digit: bool,
    normalize_strokes: bool,
    refine: bool,
) -> Preprocessed:
    """The pipeline on a decoded image, worked on at ``work_side`` pixels at most."""
    full = img
    result = Preprocessed(np.zeros((28, 28), np.float32), source_size=source_size)
    if img.size != source_size:
        result.steps.append(f"decoded at 1/{round(source_size[0] / img.size[0])} scale")
    img = eight_bit(img)
    # Dropping channels first makes a canvas's resize cheaper; on a large photo, whose
    # channels differ, the search for equal ones is better made on the 128 px result.
    small_source = max(img.size) <= 4 * work_side
    if small_source:
        img = drop_unused_channels(img)
    if max(img.size) > work_side:  # area-average in PIL's C code before any numpy work
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode not in ("L", "RGB", "RGBA", "LA"):
            img = img.convert("RGB")
        f = work_side / max(img.size)
        size = (max(1, round(img.size[0] * f)), max(1, round(img.size[1] * f)))
        img = img.resize(size, Image.Resampling.BOX)
        result.steps.append(f"downscaled to {size[0]}x{size[1]}")
    if not small_source:
        img = drop_unused_channels(img)
    gray, rgb = flatten(img)
    rgb = rgb if robust else None
    scale = gray.shape[1] / result.source_size[0]

    if robust and uneven(gray):
        # Lighting, shadow, fog or grey paper: the ink is measured against a local
        # background estimate rather than one level for the whole image.
        result.inverted = dark_ink_local(gray)
        if refine and not result.inverted and scale <= 0.25:
            # A sheet on a desk under a steep lamp: the lamp makes the desk's border
            # uneven, and the background map, whose window is far narrower than the
            # sheet, takes the sheet itself for background. Judged on a plain threshold.
            paper = gray > otsu(gray)
            if is_sheet(paper) and edge_step(gray, paper) > 0.15:
                return _on_sheet(full, result, paper, deskew_digit, normalize_strokes)
        ink = ink_on_uneven(gray, result.inverted)
        result.steps += ["inverted"] * result.inverted + ["uneven background removed"]
    else:
        result.inverted = dark_ink(gray) if robust else border_level(gray) > 0.5
        if result.inverted:
            gray = 1.0 - gray
            result.steps.append("inverted")
        ink = np.clip(gray - border_level(gray), 0.0, None)
    if robust and rgb is not None and ink.max() < 0.25:
        colour = hue_distance(rgb, np.median(border_pixels(rgb), axis=0))
        if colour.max() > 2 * ink.max():
            ink = np.clip(colour - np.median(colour), 0.0, None)
            result.steps.append("colour contrast")

    peak = float(ink.max())
    if peak < BLANK_CONTRAST:
        return _blank(result)
    ink /= peak
    if robust:
        # Otsu alone picks too high a threshold for faint or blurred strokes (motion blur,
        # thin pens): capped, the mask keeps them; the noise floor below still uses it.
        t = min(otsu(ink[ink > 0.05]), 0.25)
        # Noise, paper texture, JPEG ringing: whatever the background away from the ink
        # reaches, up to 40% of the ink threshold. Clean images keep their faint edges.
        away = ~grow(ink > t, 3) & (ink < t)
        noise = quantiles(ink[away], [0.995])[0] if away.any() else 0.0
        ink[ink <= min(noise, 0.4 * t)] = 0.0
        ink, bridges = remove_lines(ink, ink > t)
        if bridges is not None:
            result.steps.append("lines removed")
        mask = ink > t
        # Faint ink links the pieces of a broken stroke (docs/results.md#measured).
        strong = mask if bridges is None else mask | bridges
        mask = keep_digit(strong, strong | (ink > LINK_LEVEL * t)) & mask
        if mask.sum() < MIN_INK_PIXELS:
            return _blank(result)
        if refine and scale <= 0.25 and is_sheet(mask):
            # A photo of a sheet on a darker desk: the paper read as the light "ink". Only
            # in photos: at MNIST's size a blurred digit is as wide.
            return _on_sheet(full, result, mask, deskew_digit, normalize_strokes)
        # Keep the anti-aliased rim and blur around the chosen strokes, and crop to it as
        # the textbook pipeline would: Otsu's mask alone crops a blurred digit too tight.
        rim = max(2, round(0.03 * max(mask.shape)))
        ink *= grow(mask, rim)
        result.steps.append("specks and border marks removed")
    mask = ink > INK_THRESHOLD
    if mask.sum() < MIN_INK_PIXELS:
        return _blank(result)

    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # Per axis: rounding the working size makes the two factors differ for thin strips
    # (300x3 -> 128x1), and one factor mapped a box past the image's edge.
    sx, sy = gray.shape[1] / result.source_size[0], gray.shape[0] / result.source_size[1]
    sw, sh = result.source_size
    result.box = (min(round(x0 / sx), sw - 1), min(round(y0 / sy), sh - 1),
                  max(min(round(x1 / sx), sw), 1), max(min(round(y1 / sy), sh), 1))  # fmt: skip
    if robust and refine and max(y1 - y0, x1 - x0) < REFINE_BELOW and scale < 0.5:
        # A small digit in a large image: look again at the source around it, at full
        # resolution, so it reaches 20x20 with its detail rather than from a few pixels.
        refined = _refine(full, result, deskew_digit, normalize_strokes)
        if refined is not None:
            return refined
    crop = ink[y0:y1, x0:x1]
    result.steps.append("cropped")
    h, w = crop.shape
    result.scale = 20.0 / max(h, w) * scale

    # Only a digit drawn at well above MNIST's size can have strokes finer than MNIST's
    # pen once at 20 px; at MNIST's own size (MNIST-C, 28x28 inputs) "thin" strokes are
    # really specks and pinholes, which thickening would turn into blobs.
    if robust and normalize_strokes and max(h, w) / scale >= STROKE_MIN_SOURCE:
        work, note = normalize_stroke(np.clip(fit(crop, STROKE_SIDE), 0, 1))
        if note:  # otherwise the crop goes to 20x20 directly, without a detour through 80
            result.steps.append(note)
            crop = work
    small = np.clip(fit(crop, 20), 0.0, 1.0)
    if not small.any():  # a sliver of ink averaged away at 20 px: nothing to centre
        return _blank(result)
    result.steps.append("fitted into 20x20")
    inked = small[small > 0.05]
    level = float(quantiles(inked, [0.9])[0]) if robust and inked.size else 1.0
    if level < FAINT_LEVEL:
        # Fine strokes fade when area-averaged down to 20 px (a 1 px line at 128 px is a
        # 0.16 grey); MNIST's are solid: the brightest tenth of a digit's ink pixels is at
        # 0.98 or more for 99% of MNIST digits, and the models expect that.
        small = np.clip(small / level, 0.0, 1.0)
        result.steps.append("faint strokes brightened")
    image = place(small)
    if deskew_digit:
        image = recenter(deskew(image))
        result.steps.append("deskewed")
    result.image = image
    result.steps.append("centered by mass")
    return result


def recenter(img: np.ndarray) -> np.ndarray:
    """Crop, fit and centre an already 28x28 image again (after deskewing moved it)."""
    rows, cols = np.flatnonzero(img.any(1)), np.flatnonzero(img.any(0))
    if not len(rows):
        return img
    crop = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return place(np.clip(fit(crop, 20, enlarge=False), 0, 1))


def _blank(result: Preprocessed) -> Preprocessed:
    result.blank = True
    result.steps.append("blank")
    return result
