"""The pipeline: the stages in order, the second looks (closer, on a sheet, around a small
digit) and the record of what was done (``Preprocessed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import ceil, floor
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from digitrec.preprocess.cleanup import LINK_LEVEL, MIN_INK_PIXELS, keep_digit, remove_lines
from digitrec.preprocess.decode import (
    ImageLike,
    PixelBudget,
    decode,
    drop_unused_channels,
    eight_bit,
    flatten,
)
from digitrec.preprocess.frame import FRAME_SOURCE, add_margin, fills_frame
from digitrec.preprocess.ink import (
    BLANK_CONTRAST,
    INK_THRESHOLD,
    dark_ink,
    dark_ink_local,
    faint_strokes,
    hue_distance,
    ink_on_uneven,
    uneven,
)
from digitrec.preprocess.ops import (
    border_level,
    border_pixels,
    fit,
    grow,
    otsu,
    quantiles,
    shrink,
)
from digitrec.preprocess.place import deskew, place, recenter
from digitrec.preprocess.sheet import edge_step, is_sheet, paper_beyond
from digitrec.preprocess.strokes import (
    FAINT_LEVEL,
    STROKE_MIN_SOURCE,
    STROKE_SIDE,
    normalize_stroke,
)


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


WORK_SIDE = 128  # larger inputs are area-averaged down first: 20x20 is the goal anyway


# A large JPEG (a phone photo) is decoded at a reduced scale down to this longer side:
# 8x the work size, so a digit 3% of the frame across still has 30 px for the second look.
DECODE_SIDE = 1024


CLOSER_SIDE = 512  # a photo read blank at WORK_SIDE is looked at again at this size


REFINE_BELOW = 28  # a digit smaller than this (work pixels) is looked at again, cropped


@dataclass(frozen=True)
class Options:
    """How an image is read, one value for every stage and every second look."""

    robust: bool = True  # False: the textbook pipeline (invert, crop, fit, centre)
    deskew: bool = False
    normalize_strokes: bool = True
    refine: bool = True  # second looks at a crop of the source (closer, sheet, small digit)


def _refine(full: Image.Image, first: Preprocessed, opts: Options) -> Preprocessed | None:
    """The pipeline again on the source cropped to the digit's box plus half its size
    each way (enough background for polarity and lighting), mapped back to the source."""
    fx, fy = _decoded_per_source(full, first)
    sx0, sy0, sx1, sy1 = first.box  # type: ignore[misc]
    x0, y0, x1, y1 = floor(sx0 * fx), floor(sy0 * fy), ceil(sx1 * fx), ceil(sy1 * fy)
    m = max(x1 - x0, y1 - y0) // 2 + 2
    box = (max(0, x0 - m), max(0, y0 - m), min(full.size[0], x1 + m), min(full.size[1], y1 + m))
    again = _again(full.crop(box), replace(opts, refine=False))
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


def _on_sheet(
    full: Image.Image,
    first: Preprocessed,
    mask: np.ndarray,
    opts: Options,
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
    again = _again(Image.composite(crop, paper_beyond(crop, on_paper), on_paper), opts)
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
    return _look(img, source_size, Options(robust, deskew_digit, normalize_strokes, refine))


@dataclass
class InkMap:
    """An image's ink at a working size, for finding several digits in it: the stages of
    ``preprocess`` up to the clean-up, which keeps one digit, left out."""

    ink: np.ndarray  # (h, w) float32 in [0, 1]: how much ink each working pixel holds
    threshold: float  # the ink level that counts as a stroke
    record: Preprocessed  # source size, polarity and steps so far; blank when no ink

    @property
    def per_source(self) -> tuple[float, float]:
        """Working pixels per source pixel, across and down."""
        h, w = self.ink.shape
        return w / self.record.source_size[0], h / self.record.source_size[1]


def ink_map(
    src: ImageLike,
    work_side: int,
    max_pixels: int | None = None,
    budget: PixelBudget | None = None,
) -> InkMap:
    """Decoding, polarity and background, noise and ruled lines: the single-digit
    pipeline's stages, at ``work_side`` pixels at most."""
    img, source_size = decode(src, max_pixels, at_least=DECODE_SIDE, budget=budget)
    record = Preprocessed(np.zeros((28, 28), np.float32), source_size=source_size)
    gray, rgb = _working_image(img, work_side, record)
    opts = Options(refine=False)  # no second looks: they look for one digit
    scale = gray.shape[1] / source_size[0]
    framed, rgb, pad = _framed(gray, rgb, record, opts)
    ink = _ink(img, framed, rgb, scale, record, opts)
    if isinstance(ink, Preprocessed):
        return InkMap(np.zeros(gray.shape, np.float32), 1.0, ink)
    ink, t, _ = _denoise(ink, record)
    return InkMap(_unframed(ink, pad).astype(np.float32, copy=False), t, record)


def digit_input(crop: np.ndarray, scale: float) -> Preprocessed:
    """A crop of an ``InkMap`` holding one digit, brought to the model's 28x28 input by
    the single-digit pipeline's last stages. ``scale``: working pixels per source pixel."""
    record = Preprocessed(np.zeros((28, 28), np.float32))
    return _fit_and_centre(crop, scale, record, Options())


def _again(image: Image.Image, opts: Options) -> Preprocessed:
    """A second look: the pipeline on a crop of the decoded image (already in memory)."""
    return _look(*decode(image, at_least=DECODE_SIDE), opts)


def _look(img: Image.Image, source_size: tuple[int, int], opts: Options) -> Preprocessed:
    """The pipeline on a decoded image at the working size, and closer if that finds none."""
    first = _read(img, source_size, WORK_SIDE, opts)
    if first.blank and _may_look_closer(img, opts) and not first.on_sheet:
        # A digit a few percent of a photo's height is a few faint pixels at 128 px, too
        # few to tell from the paper's grain: look again, at 512 px, before saying "no
        # digit" (the digit found there is then refined on the photo itself).
        closer = _read(img, source_size, CLOSER_SIDE, opts)
        if not closer.blank:
            at = int(closer.steps[0].startswith("decoded"))  # after "decoded at 1/2 scale"
            closer.steps.insert(at, f"nothing at {WORK_SIDE} px: looked again at {CLOSER_SIDE} px")
            return closer
    return first


def _may_look_closer(img: Image.Image, opts: Options) -> bool:
    """Whether a blank first look at ``img`` is followed by a look at ``CLOSER_SIDE``."""
    return opts.robust and opts.refine and max(img.size) > CLOSER_SIDE


def _read(
    img: Image.Image,
    source_size: tuple[int, int],
    work_side: int,
    opts: Options,
) -> Preprocessed:
    """The pipeline on a decoded image, worked on at ``work_side`` pixels at most."""
    result = Preprocessed(np.zeros((28, 28), np.float32), source_size=source_size)
    gray, rgb = _working_image(img, work_side, result)
    scale = gray.shape[1] / source_size[0]
    gray, rgb, pad = _framed(gray, rgb, result, opts)
    ink = _ink(img, gray, rgb if opts.robust else None, scale, result, opts)
    if isinstance(ink, Preprocessed):  # blank, or a sheet of paper read on its own path
        return ink
    if opts.robust:
        ink = _clean(img, ink, scale, result, opts)
        if isinstance(ink, Preprocessed):
            return ink
    ink = _unframed(ink, pad)
    mask = ink > INK_THRESHOLD
    if mask.sum() < MIN_INK_PIXELS:
        return _blank(result)

    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    result.box = source_box((y0, y1, x0, x1), ink.shape, result.source_size)
    if opts.robust and opts.refine and max(y1 - y0, x1 - x0) < REFINE_BELOW and scale < 0.5:
        # A small digit in a large image: look again at the source around it, at full
        # resolution, so it reaches 20x20 with its detail rather than from a few pixels.
        refined = _refine(img, result, opts)
        if refined is not None:
            return refined
    result.steps.append("cropped")
    return _fit_and_centre(ink[y0:y1, x0:x1], scale, result, opts)


def source_box(
    box: tuple[int, int, int, int], work_shape: tuple[int, ...], source_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A (y0, y1, x0, x1) box at the working size as (x0, y0, x1, y1) in the source."""
    # Per axis: rounding the working size makes the two factors differ for thin strips
    # (300x3 -> 128x1), and one factor mapped a box past the image's edge.
    (y0, y1, x0, x1), (sw, sh) = box, source_size
    sx, sy = work_shape[1] / sw, work_shape[0] / sh
    return (min(round(x0 / sx), sw - 1), min(round(y0 / sy), sh - 1),
            max(min(round(x1 / sx), sw), 1), max(min(round(y1 / sy), sh), 1))  # fmt: skip


def _working_image(
    img: Image.Image, work_side: int, result: Preprocessed
) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels (and colour, where the image has any) at ``work_side`` pixels at most."""
    if img.size != result.source_size:
        result.steps.append(f"decoded at 1/{round(result.source_size[0] / img.size[0])} scale")
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
    return flatten(img)


def _framed(
    gray: np.ndarray, rgb: np.ndarray | None, result: Preprocessed, opts: Options
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """A small image whose ink touches every side given MNIST's margin (``frame``), and
    the margin's width (0: none added)."""
    if not opts.robust or max(result.source_size) > FRAME_SOURCE or not fills_frame(gray):
        return gray, rgb, 0
    result.steps.append("fills its frame: a margin added")
    return add_margin(gray, rgb)


def _unframed(ink: np.ndarray, pad: int) -> np.ndarray:
    return ink[pad:-pad, pad:-pad] if pad else ink


def _ink(
    full: Image.Image,
    gray: np.ndarray,
    rgb: np.ndarray | None,
    scale: float,
    result: Preprocessed,
    opts: Options,
) -> np.ndarray | Preprocessed:
    """Polarity and background: how much ink each pixel holds, 0 to 1."""
    # Faint ink is looked for by the robust pipeline where no closer look follows: in a
    # large photo at 128 px the paper's grain can pass for it, and at 512 px its digit is
    # found with its detail.
    first_look = max(gray.shape) <= WORK_SIDE
    faint = opts.robust and not (first_look and _may_look_closer(full, opts))
    if opts.robust and uneven(gray):
        # Lighting, shadow, fog or grey paper: the ink is measured against a local
        # background estimate rather than one level for the whole image.
        result.inverted = dark_ink_local(gray)
        if opts.refine and not result.inverted and scale <= 0.25:
            # A sheet on a desk under a steep lamp: the lamp makes the desk's border
            # uneven, and the background map, whose window is far narrower than the
            # sheet, takes the sheet itself for background. Judged on a plain threshold.
            paper = gray > otsu(gray)
            if is_sheet(paper) and edge_step(gray, paper) > 0.15:
                return _on_sheet(full, result, paper, opts)
        ink = ink_on_uneven(gray, result.inverted)
        result.steps += ["inverted"] * result.inverted + ["uneven background removed"]
    else:
        result.inverted = dark_ink(gray, faint) if opts.robust else border_level(gray) > 0.5
        if result.inverted:
            gray = 1.0 - gray
            result.steps.append("inverted")
        ink = np.clip(gray - border_level(gray), 0.0, None)
    if rgb is not None and ink.max() < 0.25:
        colour = hue_distance(rgb, np.median(border_pixels(rgb), axis=0))
        if colour.max() > 2 * ink.max():
            ink = np.clip(colour - np.median(colour), 0.0, None)
            result.steps.append("colour contrast")

    peak = float(ink.max())
    if peak < BLANK_CONTRAST and not (faint and faint_strokes(ink)):
        return _blank(result)
    ink /= peak
    return ink


def _clean(
    full: Image.Image, ink: np.ndarray, scale: float, result: Preprocessed, opts: Options
) -> np.ndarray | Preprocessed:
    """The digit's strokes alone: noise, ruled lines, specks and border marks removed."""
    ink, t, bridges = _denoise(ink, result)
    mask = ink > t
    # Faint ink links the pieces of a broken stroke (docs/results.md#measured).
    strong = mask if bridges is None else mask | bridges
    mask = keep_digit(strong, strong | (ink > LINK_LEVEL * t)) & mask
    if mask.sum() < MIN_INK_PIXELS:
        return _blank(result)
    if opts.refine and scale <= 0.25 and is_sheet(mask):
        # A photo of a sheet on a darker desk: the paper read as the light "ink". Only
        # in photos: at MNIST's size a blurred digit is as wide.
        return _on_sheet(full, result, mask, opts)
    # Keep the anti-aliased rim and blur around the chosen strokes, and crop to it as
    # the textbook pipeline would: Otsu's mask alone crops a blurred digit too tight.
    rim = max(2, round(0.03 * max(mask.shape)))
    ink *= grow(mask, rim)
    result.steps.append("specks and border marks removed")
    return ink


def _denoise(ink: np.ndarray, result: Preprocessed) -> tuple[np.ndarray, float, np.ndarray | None]:
    """The ink with the background's noise and ruled lines removed, the level that counts
    as a stroke, and where removed lines crossed strokes (or None)."""
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
    return ink, t, bridges


def _fit_and_centre(
    crop: np.ndarray, scale: float, result: Preprocessed, opts: Options
) -> Preprocessed:
    """The cropped ink fitted into 20x20 and centred by mass in 28x28, as MNIST's digits."""
    h, w = crop.shape
    result.scale = 20.0 / max(h, w) * scale

    # Only a digit drawn at well above MNIST's size can have strokes finer than MNIST's
    # pen once at 20 px; at MNIST's own size (MNIST-C, 28x28 inputs) "thin" strokes are
    # really specks and pinholes, which thickening would turn into blobs. A small digit
    # drawn with a fat pen (a 60 px 3 on the page's pad) is still thinned.
    if opts.robust and opts.normalize_strokes:
        thicken = max(h, w) / scale >= STROKE_MIN_SOURCE
        work, note = normalize_stroke(np.clip(fit(crop, STROKE_SIDE), 0, 1), thicken)
        if note:  # otherwise the crop goes to 20x20 directly, without a detour through 80
            result.steps.append(note)
            crop = work
    small = np.clip(fit(crop, 20), 0.0, 1.0)
    if not small.any():  # a sliver of ink averaged away at 20 px: nothing to centre
        return _blank(result)
    result.steps.append("fitted into 20x20")
    inked = small[small > 0.05]
    level = float(quantiles(inked, [0.9])[0]) if opts.robust and inked.size else 1.0
    if level < FAINT_LEVEL:
        # Fine strokes fade when area-averaged down to 20 px (a 1 px line at 128 px is a
        # 0.16 grey); MNIST's are solid: the brightest tenth of a digit's ink pixels is at
        # 0.98 or more for 99% of MNIST digits, and the models expect that.
        small = np.clip(small / level, 0.0, 1.0)
        result.steps.append("faint strokes brightened")
    image = place(small)
    if opts.deskew:
        image = recenter(deskew(image))
        result.steps.append("deskewed")
    result.image = image
    result.steps.append("centered by mass")
    return result


def _blank(result: Preprocessed) -> Preprocessed:
    result.blank = True
    result.steps.append("blank")
    return result
