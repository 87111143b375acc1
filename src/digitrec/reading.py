"""Reading whole numbers: every digit of an image, line by line, left to right.

The image goes through the single-digit pipeline's decoding, polarity, background and
clean-up stages (``preprocess.ink_map``); ``preprocess.segment`` finds its lines, pieces
and marks. A line whose digits stand apart is read piece by piece: the reading model
(``reading_model``: a digit model that also says "none" for what is not one whole digit)
reads each plausible grouping of neighbouring pieces (one piece, a digit written in two
strokes) and the reading with the best total score wins; which digit each is, the digit
model and the reading model decide together. A line where digits touch or overlap (a
piece wider than a digit) is read whole by the line model (``line_model``), which needs
no cuts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from digitrec.calibration import UNCERTAIN_BELOW
from digitrec.models import LINE_HEIGHT, LineModel
from digitrec.predictor import Predictor
from digitrec.preprocess import (
    ImageLike,
    InkMap,
    PixelBudget,
    Preprocessed,
    digit_input,
    grow,
    ink_map,
    resize,
    source_box,
)
from digitrec.preprocess.segment import Line, Part, find_lines, union_box, union_mask

READ_SIDE = 1024  # the working size: a line of eight digits keeps ~100 px a digit
MAX_PARTS = 5  # pieces one digit may be made of
JOIN_GAP = 0.25  # pieces further apart than this share of the line's height are two digits
MAX_WIDTH = 1.5  # no digit is wider than this share of its line's height
# Each digit read adds this to a reading's log-probability: without it a model trained
# with label smoothing (~0.92 for a sure digit) favours one digit over two sure ones.
SEGMENT_BONUS = 0.1
SHORT = 0.6  # a digit shorter than this share of its line's height costs (SHORT - r) * 4
TOO_WIDE = 1.1  # a digit wider than this share of its line's height costs (r - TOO_WIDE) * 3
RIM = 0.04  # a crop keeps the line's ink this share of its height around its pieces
NONE = "none"  # a reading model's class for "not one whole digit" (a fragment, two digits)
STROKE = 0.3  # a piece of a touching line this share of its height (either way) is a stroke
PAD_Y, PAD_X = 3, 4  # a line model's input: empty rows above and below, columns at each end
Box = tuple[int, int, int, int]  # y0, y1, x0, x1 in the ink map


@dataclass
class Char:
    """One character read: a digit with the model's probabilities, or a mark."""

    char: str
    confidence: float
    probabilities: list[float] | None  # None for a mark
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the source's pixels
    line: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "char": self.char,
            "confidence": round(self.confidence, 6),
            "probabilities": [round(p, 6) for p in self.probabilities]
            if self.probabilities is not None
            else None,
            "box": list(self.box),
            "line": self.line,
        }


@dataclass
class Reading:
    text: str  # lines joined by "\n"
    confidence: float  # that every digit is right: the product of the digits' confidences
    uncertain: bool  # some digit is below the predictor's "not sure" threshold
    chars: list[Char] = field(default_factory=list)
    source_size: tuple[int, int] = (0, 0)

    @property
    def blank(self) -> bool:
        return not self.chars

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "confidence": round(self.confidence, 6),
            "uncertain": self.uncertain,
            "blank": self.blank,
            "source_size": list(self.source_size),
            "digits": [c.to_dict() for c in self.chars],
        }


def read(
    predictor: Predictor,
    src: ImageLike,
    max_pixels: int | None = None,
    budget: PixelBudget | None = None,
) -> Reading:
    """Every digit (and decimal point, comma, minus) in ``src``, as text: lines whose
    digits stand apart read piece by piece (``predictor`` and its reading model), lines
    whose digits touch read whole by its line model (``Predictor.line_model``)."""
    ink = ink_map(src, READ_SIDE, max_pixels, budget)
    lines = [] if ink.record.blank else find_lines(ink.ink > ink.threshold)
    found = _pieces(predictor, ink, [(i, ln) for i, ln in enumerate(lines) if not ln.touching])
    for i, line in enumerate(lines):
        if line.touching:
            found += [(i, box, p) for box, p in read_line(predictor.line_model(), ink, line)]

    def where(box: Box) -> tuple[int, int, int, int]:
        return source_box(box, ink.ink.shape, ink.record.source_size)

    chars = []
    for i, box, p in found:
        d = int(p.argmax())
        chars.append(Char(predictor.classes[d], float(p[d]), [float(v) for v in p], where(box), i))
    for i, line in enumerate(lines):
        for m in line.marks:
            chars.append(
                Char(m.char, 1.0, None, where((m.part.y0, m.part.y1, m.part.x0, m.part.x1)), i)
            )
    chars.sort(key=lambda ch: (ch.line, (ch.box[0] + ch.box[2]) / 2))
    texts = ["".join(c.char for c in chars if c.line == i) for i in range(len(lines))]
    digits = [c for c in chars if c.probabilities is not None]
    return Reading(
        text="\n".join(t for t in texts if t),
        confidence=math.prod(c.confidence for c in digits) if digits else 0.0,
        # The reading and line models are not calibrated: the fixed threshold, not the
        # digit model's measured one, applies to their confidences.
        uncertain=not digits or any(c.confidence < UNCERTAIN_BELOW for c in digits),
        chars=chars,
        source_size=ink.record.source_size,
    )


def _pieces(
    predictor: Predictor, ink: InkMap, lines: list[tuple[int, Line]]
) -> list[tuple[int, Box, np.ndarray]]:
    """The digits of lines whose digits stand apart: where they are, as the reading model
    groups the pieces; which digit each is, the mean of the two models' probabilities."""
    reader = predictor.reading_model()
    found = [(i, c, p) for i, line in lines for c, p in _best_crops(reader, ink, line)]
    if not found:
        return []
    probs = predictor.classify(np.stack([c.image.image for _, c, _ in found]))
    if reader is not predictor:
        theirs = np.stack([p for _, _, p in found])
        probs = (probs + theirs / theirs.sum(1, keepdims=True)) / 2
    return [(i, c.box, p) for (i, c, _), p in zip(found, probs, strict=True)]


@dataclass
class LineInput:
    """A line of digits as the line model sees it."""

    image: np.ndarray  # (LINE_HEIGHT, W) float32 in [0, 1]
    x0: float  # the ink map's column at the image's left edge
    scale: float  # image pixels per ink-map pixel
    box: Box  # the strokes' box in the ink map
    mask: np.ndarray  # the strokes' pixels in ``box``


def strokes(line: Line) -> list[Part]:
    """The pieces of ``line`` that are its digits' strokes: those at least ``STROKE`` of
    its height, and smaller ones within their box (a 5's flag); not specks of a photo's
    grain, which would be read, and stretch the band the digits are scaled by."""
    big = [p for p in line.parts if max(p.w, p.h) >= STROKE * line.height] or line.parts
    y0, y1, x0, x1 = union_box(big)
    kept = {id(p) for p in big}  # by identity: parts compare by their masks' pixels
    inside = lambda p: p.y0 >= y0 and p.y1 <= y1 and p.x0 >= x0 and p.x1 <= x1  # noqa: E731
    return [p for p in line.parts if id(p) in kept or inside(p)]


def line_input(ink: InkMap, line: Line) -> LineInput:
    """The ink of ``line``'s strokes (no other line's), their band scaled to fill the
    model's height less ``PAD_Y`` above and below, with ``PAD_X`` empty columns each end."""
    box, mask = union_mask(strokes(line))
    y0, y1, x0, x1 = box
    a = ink.ink[y0:y1, x0:x1] * grow(mask, max(1, round(RIM * line.height)))
    f = (LINE_HEIGHT - 2 * PAD_Y) / (y1 - y0)
    a = resize(a, (max(4, round((x1 - x0) * f)), LINE_HEIGHT - 2 * PAD_Y))
    image = np.pad(a, ((PAD_Y, PAD_Y), (PAD_X, PAD_X)))
    return LineInput(image, x0 - PAD_X / f, f, box, mask)


def ctc_runs(best: np.ndarray) -> list[tuple[int, list[int]]]:
    """Greedy CTC decoding of a line's most likely class per column (0: blank): each
    character read and the columns that read it (a repeat needs a blank between)."""
    runs: list[tuple[int, list[int]]] = []
    prev = 0
    for t, c in enumerate(best.tolist()):
        if c and c == prev:
            runs[-1][1].append(t)
        elif c:
            runs.append((c, [t]))
        prev = c
    return runs


def read_line(model: LineModel, ink: InkMap, line: Line) -> list[tuple[Box, np.ndarray]]:
    """The digits of ``line`` read whole by a line model, left to right: each one's box
    (the line's ink between the midpoints to its neighbours) and the ten digits'
    probabilities (its columns' mean)."""
    li = line_input(ink, line)
    device = next(model.parameters()).device
    with torch.inference_mode():
        x = torch.from_numpy(li.image)[None, None].to(device)
        probs = torch.softmax(model(x)[0].float(), 0).T.cpu().numpy()  # (columns, classes)
    runs = ctc_runs(probs.argmax(1))
    if not runs:  # the line model read no character in this ink
        return []
    # A column covers two of the image's pixels: its centre is 2t + 1.
    centres = [li.x0 + (2 * float(np.mean(ts)) + 1) / li.scale for _, ts in runs]
    (y0, _, x0, x1), mask = li.box, li.mask
    bounds = [x0, *((a + b) / 2 for a, b in pairwise(centres)), x1]
    out = []
    for (_, ts), (a, b) in zip(runs, pairwise(bounds), strict=True):
        lo, hi = round(a), max(round(b), round(a) + 1)
        rows = np.flatnonzero(mask[:, lo - x0 : hi - x0].any(1))
        top, bottom = (y0 + int(rows[0]), y0 + int(rows[-1]) + 1) if rows.size else (y0, y0 + 1)
        p = probs[ts, 1:].mean(0)
        out.append(((top, bottom, lo, hi), p / p.sum()))
    return out


def _candidates(line: Line) -> list[tuple[int, int]]:
    """(first, last) pieces of every grouping that may be one digit: up to ``MAX_PARTS``
    neighbours, none further than ``JOIN_GAP`` from the rest, the whole not too wide."""
    parts, h, out = line.parts, line.height, []
    for i in range(len(parts)):
        right = parts[i].x1
        for j in range(i, min(len(parts), i + MAX_PARTS)):
            if j > i and parts[j].x0 > right + JOIN_GAP * h:
                break
            right = max(right, parts[j].x1)
            _, _, x0, x1 = union_box(parts[i : j + 1])
            if j > i and x1 - x0 > MAX_WIDTH * h:
                break
            out.append((i, j))
    return out


def _shape_cost(box: Box, height: float) -> float:
    """How unlike one digit of its line a grouping is: too short, or too wide."""
    y0, y1, x0, x1 = box
    tall, wide = (y1 - y0) / height, (x1 - x0) / height
    return 4 * max(0.0, SHORT - tall) + 3 * max(0.0, wide - TOO_WIDE)


def _score(probs: np.ndarray, box: Box, height: float, blank: bool) -> float:
    """How good a reading it is that a grouping is one digit."""
    if blank:  # a sliver that fades away at 20 px is no digit: passed over, at a cost
        return -1.0
    sure = math.log(max(float(probs.max()), 1e-9))
    return sure + SEGMENT_BONUS - _shape_cost(box, height)


def _digit_probabilities(predictor: Predictor, images: np.ndarray) -> np.ndarray:
    """The ten digits' probabilities of each crop; with a reading model, what its "none"
    class takes is left out, so they sum to the belief that the crop is one whole digit."""
    probs = predictor.classify(images)
    if NONE in predictor.classes:
        probs = np.delete(probs, predictor.classes.index(NONE), axis=1)
    return probs


@dataclass
class Crop:
    """A grouping of neighbouring pieces of a line that may be one digit, as the model sees it."""

    first: int  # the line's pieces ``first`` to ``last`` (inclusive)
    last: int
    box: Box
    mask: np.ndarray  # the pieces' pixels in ``box``
    image: Preprocessed  # the model's 28x28 input


Read = tuple[Crop, np.ndarray]  # a crop and the ten digits' probabilities given it


def crops(ink: InkMap, line: Line) -> list[Crop]:
    """Every grouping of ``line``'s pieces that may be one digit, brought to 28x28."""
    scale = ink.per_source[0]
    rim = max(1, round(RIM * line.height))
    out = []
    for i, j in _candidates(line):
        box, mask = union_mask(line.parts[i : j + 1])
        y0, y1, x0, x1 = box
        out.append(
            Crop(i, j, box, mask, digit_input(ink.ink[y0:y1, x0:x1] * grow(mask, rim), scale))
        )
    return out


def _best_crops(reader: Predictor, ink: InkMap, line: Line) -> list[Read]:
    """The digits of one line, left to right: the groupings of its pieces that ``reader``
    reads best together (blank ones left out), with the digits' probabilities it gave."""
    cands = crops(ink, line)
    if not cands:
        return []
    probs = _digit_probabilities(reader, np.stack([c.image.image for c in cands]))
    # best[k]: the best reading of the first k pieces, and the grouping that ends it.
    n = len(line.parts)
    best: list[tuple[float, Read | None]] = [(0.0, None), *[(-math.inf, None)] * n]
    for c, p in sorted(zip(cands, probs, strict=True), key=lambda cp: cp[0].last):
        s = best[c.first][0] + _score(p, c.box, line.height, c.image.blank)
        if s > best[c.last + 1][0]:
            best[c.last + 1] = (s, (c, p))
    path, k = [], n
    while k > 0 and (step := best[k][1]) is not None:  # every single piece is a candidate
        path.append(step)
        k = step[0].first
    return [(c, p) for c, p in reversed(path) if not c.image.blank]
