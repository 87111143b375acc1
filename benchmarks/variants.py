"""Realistic renderings of MNIST test digits: what people actually hand a recognizer.

Each variant takes a 28x28 uint8 MNIST digit (light on dark) and a random generator and
returns an image as a front end would receive it: a large canvas, a photo of paper, a
JPEG, a transparent PNG. The MNIST-C-style corruptions follow the descriptions of Mu &
Gilmer (2019), "MNIST-C: A Robustness Benchmark for Computer Vision", at one fixed
severity each; they are re-implementations, not the published data set.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from digitrec import augment
from digitrec.compose import pen_strokes, to_u8
from digitrec.gui import BRUSH, MIN_PEN, POSTED_PEN
from digitrec.preprocess import pipeline

Rng = np.random.Generator
Variant = Callable[[np.ndarray, Rng], object]


# ------------------------------------------------------------------ drawing helpers


def on_canvas(strokes: np.ndarray, canvas: tuple[int, int], rng: Rng) -> np.ndarray:
    """Paste strokes at a random position of a black canvas (H, W)."""
    H, W = canvas
    h, w = strokes.shape
    out = np.zeros(canvas, np.float32)
    y, x = rng.integers(0, max(1, H - h + 1)), rng.integers(0, max(1, W - w + 1))
    out[y : y + h, x : x + w] = strokes[: H - y, : W - x]
    return out


def jpeg(a: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(to_u8(a)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def drawn(digit: np.ndarray, rng: Rng, lo: int = 120, hi: int = 250) -> np.ndarray:
    return on_canvas(pen_strokes(digit, int(rng.integers(lo, hi))), (280, 280), rng)


def drawn_png(digit: np.ndarray, rng: Rng) -> bytes:
    """The digit drawn on the page (strokes scaled with the digit, MNIST's pen), posted."""
    return page_png(drawn(digit, rng))


def page_png(ink: np.ndarray) -> bytes:
    """Ink on the web page's 280 px pad as the page posts it: #111 on white (anti-aliased),
    scaled to 128 px with smoothing and encoded as an opaque RGBA PNG, which is what a
    browser's canvas.toBlob writes."""
    grey = to_u8(1.0 - ink * (1.0 - 0x11 / 255))
    img = Image.fromarray(grey).convert("RGBA").resize((128, 128), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@contextmanager
def decoded_at(side: int) -> Iterator[None]:
    """Large JPEGs decoded down to ``side`` px (0: in full) inside the block, for timing the
    pipeline's reduced decode against a full one in the same run."""
    pipeline.DECODE_SIDE, default = side, pipeline.DECODE_SIDE  # where preprocess reads it
    try:
        yield
    finally:
        pipeline.DECODE_SIDE = default


def phone_photo(
    digit: np.ndarray | None,
    rng: Rng,
    share: tuple[float, float] = (0.06, 0.7),
    desk: bool = False,
) -> bytes:
    """A 12-megapixel phone photo (4032x3024 JPEG) of dark ink on warm-tinted paper under
    a lamp, the digit ``share`` of the frame's height (no digit: blank paper). With
    ``desk``, the paper is a sheet covering 50 to 80% of each side, turned up to 12
    degrees, on a dark wooden desk. Not a variant of the benchmark: at 300 ms a render,
    it is benchmarks/photos.py's own."""
    H, W = 3024, 4032
    if digit is None:
        strokes = np.zeros((1, 1), np.float32)
    else:
        strokes = pen_strokes(digit, int(rng.uniform(*share) * H))
    ys, xs = np.ogrid[0:H, 0:W]
    light = 0.7 + rng.uniform(-0.3, 0.3) * (xs / W - 0.5) + rng.uniform(-0.2, 0.2) * (ys / H - 0.5)
    if desk:
        h, w = int(rng.uniform(0.5, 0.8) * H), int(rng.uniform(0.5, 0.8) * W)
        top, left = (H - h) // 2, (W - w) // 2
        sheet = np.zeros((H, W), np.float32)
        sheet[top : top + h, left : left + w] = 1
        ink = np.zeros((H, W), np.float32)
        ink[top + 40 : top + h - 40, left + 40 : left + w - 40] = on_canvas(
            strokes, (h - 80, w - 80), rng
        )  # the digit 40 px or more inside the sheet's edge
        angle = rng.uniform(-12, 12)
        sheet, ink = (np.asarray(Image.fromarray(a).rotate(angle, Image.Resampling.BILINEAR))
                      for a in (sheet, ink))  # fmt: skip
        sheet = ndimage.gaussian_filter(sheet, 2)[..., None]
        ground = sheet * [0.98, 1.0, 0.92] + (1 - sheet) * [0.3, 0.2, 0.12]
    else:
        ink = on_canvas(strokes, (H, W), rng)
        ground = np.array([0.98, 1.0, 0.92])
    page = np.clip(light, 0.2, 1.0) * (1 - 0.75 * ink)
    page += rng.normal(0, 0.015, (H, W))
    return jpeg(page[..., None] * ground, 88)


# ---------------------------------------------------------------------- variants


def clean(d, rng):
    return d


def canvas_white(d, rng):
    return to_u8(drawn(d, rng))


def canvas_black(d, rng):
    return to_u8(1 - drawn(d, rng))


def canvas_small(d, rng):
    """Drawn small, anywhere on a large canvas."""
    return to_u8(1 - on_canvas(pen_strokes(d, int(rng.integers(40, 80))), (400, 400), rng))


def canvas_transparent(d, rng):
    """A web canvas export: black strokes, transparent background."""
    a = drawn(d, rng)
    rgba = np.zeros((*a.shape, 4), np.uint8)
    rgba[..., 3] = to_u8(a)
    return Image.fromarray(rgba, "RGBA")


def thin(d, rng):
    """A thin pen that skips: a band about 3 px wide along the strokes' ridges (where the
    distance to the stroke's edge is within 1.5 px of its local maximum). Ridges break
    where strokes meet or bulge: 495 of 500 renders come in more pieces than the digit
    they were drawn from, and 174 lose a loop (an 8 without its crossing)."""
    strokes = drawn(d, rng, 180, 250) > 0.5
    dist = ndimage.distance_transform_edt(strokes)
    centre = strokes & (dist >= ndimage.maximum_filter(dist, size=9) - 1.5)
    return to_u8(1 - ndimage.gaussian_filter(centre.astype(np.float32), 0.7))


def fine(d, rng):
    """A fine pen drawn in one unbroken line: the strokes' skeleton (same pieces and
    loops as the digit), about 3 px wide, like ``thin`` but without its breaks."""
    line = ndimage.binary_dilation(skeleton(drawn(d, rng, 180, 250) > 0.5))
    return to_u8(1 - ndimage.gaussian_filter(line.astype(np.float32), 0.7))


# How deep ``eroded`` cuts, as a share of the strokes' typical half-width (uniform in the
# range). The benchmark's --erosion fixes it, to see where reading starts to fail.
EROSION = (0.6, 0.8)


def eroded(d, rng):
    """Thin strokes as the issue names them: the drawing eroded by 60 to 80% of its strokes'
    typical half-width (parts of a stroke narrower than that break off, as erosion does)."""
    strokes = drawn(d, rng, 180, 250) > 0.5
    dist = ndimage.distance_transform_edt(strokes)
    ridge = strokes & (dist >= ndimage.maximum_filter(dist, size=3))
    kept = dist > rng.uniform(*EROSION) * np.median(dist[ridge])
    return to_u8(1 - ndimage.gaussian_filter(kept.astype(np.float32), 0.7))


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang & Suen's thinning, the same the `--pen` augmentation uses (one pixel wide
    lines with the shape's pieces and loops)."""
    batch = torch.from_numpy(mask.astype(np.uint8))[None, None]
    return augment.skeleton(batch)[0, 0].numpy().astype(bool)


def thick(d, rng):
    """A fat marker."""
    s = drawn(d, rng, 150, 200)
    return to_u8(1 - ndimage.grey_dilation(s, size=(int(rng.integers(9, 15)),) * 2))


def paper(d, rng, colour: bool = False):
    """Dark ink on white or grey paper under a lamp: gradient, noise, JPEG."""
    H, W = 300, 400
    ink = on_canvas(pen_strokes(d, int(rng.integers(120, 220))), (H, W), rng)
    ys, xs = np.mgrid[0:H, 0:W] / max(H, W)
    angle = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(0.55, 0.95) + 0.25 * (np.cos(angle) * xs + np.sin(angle) * ys - 0.5)
    shade = np.clip(light, 0.3, 1.0)
    page = shade * (1 - 0.8 * ink) + rng.normal(0, 0.03, (H, W))
    return jpeg(page, int(rng.integers(60, 90)))


def pencil(d, rng):
    """A light pencil on white paper, scanned: 6-15% contrast over the scanner's noise."""
    H, W = 300, 400
    ink = on_canvas(pen_strokes(d, int(rng.integers(120, 220))), (H, W), rng)
    page = 0.92 * (1 - rng.uniform(0.06, 0.15) * ink) + rng.normal(0, 0.012, (H, W))
    return jpeg(page, 90)


def paper_shadow(d, rng):
    """White paper with the soft shadow of a hand or phone across it."""
    H, W = 300, 400
    ink = on_canvas(pen_strokes(d, int(rng.integers(120, 220))), (H, W), rng)
    xs = np.arange(W)[None, :]
    edge = rng.uniform(0.2, 0.8) * W
    shadow = 1 - 0.45 * (1 / (1 + np.exp(-(xs - edge) / 15)))
    page = 0.92 * shadow * (1 - 0.85 * ink) + rng.normal(0, 0.02, (H, W))
    return jpeg(page, 80)


def coloured(d, rng):
    """Coloured ink on coloured paper, photographed."""
    H, W = 300, 300
    ink = on_canvas(pen_strokes(d, int(rng.integers(120, 220))), (H, W), rng)[..., None]
    paper_rgb = rng.uniform(0.6, 1.0, 3)
    ink_rgb = rng.uniform(0.0, 0.45, 3)
    ink_rgb[rng.integers(0, 3)] = rng.uniform(0.4, 0.9)  # a real hue, not just dark
    img = paper_rgb * (1 - ink) + ink_rgb * ink + rng.normal(0, 0.02, (H, W, 3))
    buf = io.BytesIO()
    Image.fromarray(to_u8(img), "RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def affine(d, rng, rotate=0.0, shear=0.0):
    a = drawn(d, rng, 120, 180).astype(np.float32)
    img = Image.fromarray(a, "F")
    img = img.rotate(rng.uniform(-rotate, rotate), Image.Resampling.BILINEAR, center=(140, 140))
    s = rng.uniform(-shear, shear)
    img = img.transform((280, 280), Image.Transform.AFFINE, (1, s, -s * 140, 0, 1, 0),
                        Image.Resampling.BILINEAR)  # fmt: skip
    return to_u8(1 - np.asarray(img))


def blurred(d, rng):
    return to_u8(1 - ndimage.gaussian_filter(drawn(d, rng), rng.uniform(2, 4)))


# MNIST-C-style corruptions, on the 28x28 digit itself as in the paper.


def _f(d):
    return d.astype(np.float32) / 255


def shot_noise(d, rng):
    return to_u8(rng.poisson(_f(d) * 60) / 60)


def impulse_noise(d, rng):
    x = _f(d).copy()
    m = rng.random(x.shape)
    x[m < 0.03] = 0
    x[m > 0.97] = 1
    return to_u8(x)


def glass_blur(d, rng):
    x = ndimage.gaussian_filter(_f(d), 0.7)
    for _ in range(2):
        for y in range(27, 0, -1):
            for xx in range(27, 0, -1):
                dy, dx = rng.integers(-1, 2, 2)
                y2, x2 = min(max(y + dy, 0), 27), min(max(xx + dx, 0), 27)
                x[y, xx], x[y2, x2] = x[y2, x2], x[y, xx]
    return to_u8(ndimage.gaussian_filter(x, 0.7))


def motion_blur(d, rng):
    k = np.zeros((7, 7), np.float32)
    k[3, :] = 1
    k = ndimage.rotate(k, rng.uniform(-45, 45), reshape=False, order=1)
    return to_u8(ndimage.convolve(_f(d), k / k.sum()))


def fog(d, rng):
    noise = ndimage.zoom(rng.random((4, 4)), 7, order=3)[:28, :28]
    x = _f(d) + 0.5 * (noise - noise.min()) / np.ptp(noise)
    return to_u8(x / x.max())


def brightness(d, rng):
    return to_u8(_f(d) + 0.4)


def stripe(d, rng):
    x = _f(d)
    c = int(rng.integers(6, 20))
    x[:, c : c + 3] = 1 - x[:, c : c + 3]
    return to_u8(x)


def _line(x, rng, dotted=False):
    r0, c0, r1, c1 = rng.integers(4, 24, 4)
    n = max(abs(r1 - r0), abs(c1 - c0)) + 1
    rr = np.linspace(r0, r1, n).round().astype(int)
    cc = np.linspace(c0, c1, n).round().astype(int)
    step = 2 if dotted else 1
    x[rr[::step], cc[::step]] = 1
    return x


def zigzag(d, rng):
    x = _f(d).copy()
    r, c = rng.integers(4, 24, 2)
    for _ in range(3):
        r2, c2 = rng.integers(4, 24, 2)
        n = max(abs(r2 - r), abs(c2 - c)) + 1
        x[np.linspace(r, r2, n).round().astype(int), np.linspace(c, c2, n).round().astype(int)] = 1
        r, c = r2, c2
    return to_u8(x)


def canny_edges(d, rng):
    x = ndimage.gaussian_filter(_f(d), 0.6)
    mag = np.hypot(ndimage.sobel(x, 0), ndimage.sobel(x, 1))
    return to_u8(mag > 0.5 * mag.max())


def dotted_line(d, rng):
    return to_u8(_line(_f(d).copy(), rng, dotted=True))


def spatter(d, rng):
    x = _f(d).copy()
    blobs = ndimage.gaussian_filter(rng.random((28, 28)), 1.2)
    return to_u8(np.maximum(x, (blobs > np.percentile(blobs, 96)).astype(np.float32)))


# ------------------------------------------------------------------ framing


def tight(d: np.ndarray, margin: int = 0) -> np.ndarray:
    """The digit cropped to its ink (as an editor's crop does), ``margin`` px kept."""
    rows, cols = np.flatnonzero(d.max(1) > 0), np.flatnonzero(d.max(0) > 0)
    return np.pad(d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], margin)


def cell(d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Tight and stretched to ``size`` (width, height), as a scanned form's cell is."""
    return np.asarray(Image.fromarray(tight(d)).resize(size, Image.Resampling.BILINEAR))


def tall(d: np.ndarray, height: int) -> np.ndarray:
    """Tight and scaled to ``height`` px tall, its aspect kept: a small scan."""
    t = tight(d)
    width = max(1, round(t.shape[1] * height / t.shape[0]))
    return np.asarray(Image.fromarray(t).resize((width, height), Image.Resampling.BILINEAR))


def tight_paper_4x(d, rng):
    """Tight, black on white, 4x: a crop of a good scan."""
    t = 255 - tight(d)
    return np.asarray(Image.fromarray(t).resize((t.shape[1] * 4, t.shape[0] * 4),
                                                Image.Resampling.BICUBIC))  # fmt: skip


# ------------------------------------------------------------------ the page's pen

PAD, PAGE_PEN = 280, 280 * BRUSH  # the page's drawing pad and its round pen, px


def page_pen(d: np.ndarray, rng: Rng, lo: int, hi: int, read: bool = False) -> bytes:
    """The digit's skeleton drawn ``lo``-``hi`` px tall with the page's pen (a round pen a
    14th of the pad, whatever the drawing's size), as an image of it is (a screenshot, a
    drawing app's export), or as the page posts it (``read``: the pen scaled to the
    drawing, gui.POSTED_PEN)."""
    line = skeleton(pen_strokes(d, int(rng.integers(lo, hi))) > 0.5)
    pen = PAGE_PEN
    if read:
        rows, cols = np.flatnonzero(line.any(1)), np.flatnonzero(line.any(0))
        extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) / PAD
        pen = PAD * min(BRUSH, max(MIN_PEN, POSTED_PEN * extent))
    dist = ndimage.distance_transform_edt(~np.pad(line, round(PAGE_PEN)))
    ink = np.clip(pen / 2 + 0.5 - dist, 0, 1).astype(np.float32)
    return page_png(on_canvas(ink, (PAD, PAD), rng))


# ------------------------------------------------------------------ handwriting styles
# A stroke model of the styles MNIST under-represents, independent of every training
# source (no MNIST digit in it): each style's strokes in a unit box (x right, y down),
# written with a jittered hand (points moved, slant, width, size, pen) on the page's pad.

Stroke = list[tuple[float, float]]
_LOOP = [(0.75, 0.15), (0.5, 0.0), (0.2, 0.08), (0.15, 0.32), (0.45, 0.48), (0.75, 0.32)]
_FLAG = [(0.0, 0.4), (1.0, 0.0), (1.0, 1.0)]  # a 1's flag 42-58 degrees down from its top
_SEVEN = [(0.05, 0.05), (0.9, 0.0), (0.35, 1.0)]
WIDE, NARROW = (0.45, 0.75), (0.25, 0.45)  # a digit's width / height
STYLES: dict[str, tuple[int, tuple[float, float], list[Stroke]]] = {
    # name: (digit, width / height, strokes)
    "1 with a flag": (1, NARROW, [_FLAG]),
    "1 with flag and foot": (1, NARROW, [_FLAG, [(0.4, 1.0), (1.6, 1.0)]]),
    "7 plain": (7, WIDE, [_SEVEN]),
    "7 with a bar": (7, WIDE, [_SEVEN, [(0.35, 0.5), (0.9, 0.48)]]),
    "4 closed": (4, WIDE, [[(0.65, 0.0), (0.05, 0.65), (0.9, 0.65)], [(0.65, 0.0), (0.65, 1.0)]]),
    "4 open": (4, WIDE, [[(0.2, 0.0), (0.08, 0.6), (0.9, 0.6)], [(0.7, 0.05), (0.7, 1.0)]]),
    "9 straight stem": (9, WIDE, [[*_LOOP, (0.75, 0.1), (0.75, 1.0)]]),
    "9 curved stem": (9, WIDE, [[*_LOOP, (0.75, 0.1), (0.72, 0.7), (0.55, 0.95), (0.25, 1.0)]]),
    "2 with a loop": (2, WIDE, [[(0.1, 0.25), (0.35, 0.0), (0.7, 0.05), (0.75, 0.35), (0.2, 0.9),
                                 (0.08, 0.82), (0.22, 0.75), (0.35, 0.95), (0.95, 1.0)]]),
    "2 without a loop": (2, WIDE, [[(0.1, 0.25), (0.35, 0.0), (0.7, 0.05), (0.75, 0.35),
                                    (0.1, 1.0), (0.95, 1.0)]]),
}  # fmt: skip


def _smooth(points: np.ndarray) -> np.ndarray:
    """One round of Chaikin's corner cutting: a hand's curves, not a polygon's corners."""
    if len(points) < 3:
        return points
    a, b = points[:-1], points[1:]
    cut = np.stack([0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b], 1).reshape(-1, 2)
    return np.vstack([points[:1], cut, points[-1:]])


def written_style(style: str, rng: Rng) -> bytes:
    """One digit in ``style`` written on the page's pad with a jittered hand, as posted."""
    _, aspect, strokes = STYLES[style]
    height = rng.uniform(150, 230)
    width = height * rng.uniform(*aspect)
    slant = rng.uniform(-0.05, 0.2) * height / width  # most hands lean right: the top ahead
    pen = height * rng.uniform(0.07, 0.13)
    x0, y0 = rng.uniform(20, PAD - 20 - width - 0.25 * height), rng.uniform(15, PAD - 15 - height)
    img = Image.new("F", (PAD, PAD), 0.0)
    draw = ImageDraw.Draw(img)
    for stroke in strokes:
        pts = np.asarray(stroke) + rng.normal(0, 0.035, (len(stroke), 2)) * (height / width, 1)
        pts = _smooth(pts)
        xy = [(x0 + (x + slant * (1 - y)) * width, y0 + y * height) for x, y in pts]
        draw.line(xy, fill=1.0, width=round(pen), joint="curve")
        for x, y in (xy[0], xy[-1]):  # round ends
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=1.0)
    return page_png(np.asarray(img))


VARIANTS: dict[str, tuple[str, Variant]] = {
    # name: (group, render)
    "clean 28x28": ("clean", clean),
    "canvas white strokes": ("canvas", canvas_white),
    "canvas black strokes": ("canvas", canvas_black),
    "canvas small, off-centre": ("canvas", canvas_small),
    "canvas transparent PNG": ("canvas", canvas_transparent),
    "thin pen": ("stroke", thin),
    "thick marker": ("stroke", thick),
    "rotated ±15°": ("rotation", lambda d, r: affine(d, r, rotate=15)),
    "sheared": ("rotation", lambda d, r: affine(d, r, shear=0.3)),
    "blurred": ("rotation", blurred),
    "paper, lamp, JPEG": ("paper", paper),
    "paper with shadow": ("paper", paper_shadow),
    "coloured ink and paper": ("colour", coloured),
    "mnist-c shot noise": ("mnist-c", shot_noise),
    "mnist-c impulse noise": ("mnist-c", impulse_noise),
    "mnist-c glass blur": ("mnist-c", glass_blur),
    "mnist-c motion blur": ("mnist-c", motion_blur),
    "mnist-c fog": ("mnist-c", fog),
    "mnist-c brightness": ("mnist-c", brightness),
    "mnist-c stripe": ("mnist-c", stripe),
    "mnist-c zigzag": ("mnist-c", zigzag),
    "mnist-c canny edges": ("mnist-c", canny_edges),
    "mnist-c dotted line": ("mnist-c", dotted_line),
    "mnist-c spatter": ("mnist-c", spatter),
    # Last, so that adding them left every other variant's random renders as they were.
    "fine pen": ("stroke", fine),
    "eroded strokes": ("stroke", eroded),
    "tight crop": ("framing", lambda d, r: tight(d)),
    "tight, 16x16": ("framing", lambda d, r: cell(d, (16, 16))),
    "tight, 12x12": ("framing", lambda d, r: cell(d, (12, 12))),
    "tight, 8 px tall": ("framing", lambda d, r: tall(d, 8)),
    "1 px margin": ("framing", lambda d, r: tight(d, 1)),
    "tight, black on white, 4x": ("framing", tight_paper_4x),
    "page pen, full size": ("page pen", lambda d, r: page_pen(d, r, 180, 250)),
    "page pen, 40-80 px tall": ("page pen", lambda d, r: page_pen(d, r, 40, 81)),
    "page pen, 40-80 px, read": ("page pen", lambda d, r: page_pen(d, r, 40, 81, read=True)),
    # Last, so that the variants above keep their seeds (their place in this table).
    "faint pencil, scanned": ("paper", pencil),
}
