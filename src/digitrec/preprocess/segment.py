"""Finding the digits of a number: the ink's pieces, grouped into lines, with the marks
(decimal point, comma, minus) told from digits by size and place.

Which pieces make one digit (a 5's flag, a 4 in two strokes) and where touching digits
part is not decided here: each line is a row of ``Part``s, wide ones already cut at
candidate places, and the reader (digitrec.reading) lets the model choose among their
groupings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from scipy import ndimage

SPECK = 0.06  # a piece smaller than this share of a digit's height each way is a speck
TALL = 0.5  # a piece at least this share of the typical digit's height is (part of) a digit
WIDE = 1.2  # a piece wider than this share of its line's height may be touching digits
CUTS_PER_HEIGHT = 3  # candidate cuts tried in a wide piece, per line height of its width
MIN_PIECE = 0.2  # no cut leaves a piece narrower than this share of the line's height


@dataclass
class Part:
    """A piece of ink: a connected component, or a slice of one where digits touch."""

    y0: int
    x0: int
    mask: np.ndarray  # bool, the piece's own pixels within its box
    cut: bool = False  # its left edge is a cut through a wider piece, not a gap

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]

    @property
    def h(self) -> int:
        return self.mask.shape[0]

    @property
    def w(self) -> int:
        return self.mask.shape[1]

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


@dataclass
class Mark:
    """A written sign that is not a digit: ``.``, ``,`` or ``-``."""

    char: str
    part: Part


@dataclass
class Line:
    """One line of writing: the pieces of its digits, left to right, and its marks."""

    parts: list[Part] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    height: float = 0.0  # the typical digit's height
    top: float = 0.0  # the typical digit's top and bottom (the baseline)
    bottom: float = 0.0


def components(mask: np.ndarray) -> list[Part]:
    """The 8-connected pieces of ``mask``."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return [
        Part(sl[0].start, sl[1].start, labels[sl] == i + 1)
        for i, sl in enumerate(ndimage.find_objects(labels))
        if sl is not None
    ]


def find_lines(mask: np.ndarray) -> list[Line]:
    """The lines of digits in a stroke mask, top to bottom; specks left out."""
    parts = components(mask)
    if not parts:
        return []
    areas = np.array([p.mask.sum() for p in parts])
    digit_h = float(
        np.median([p.h for p, a in zip(parts, areas, strict=True) if a >= 0.2 * areas.max()])
    )
    parts = [p for p in parts if max(p.h, p.w) >= SPECK * digit_h]
    tall = [p for p in parts if p.h >= TALL * digit_h]
    lines = _group_lines(tall)
    for p in parts:
        if p.h < TALL * digit_h:
            _place_small(p, lines)
    for line in lines:
        line.parts = sorted(
            (piece for p in line.parts for piece in _cut(p, line.height)), key=lambda p: p.cx
        )
        line.marks.sort(key=lambda m: m.part.cx)
    return lines


def _group_lines(tall: list[Part]) -> list[Line]:
    """Lines by vertical overlap: a piece joins the line whose typical band it overlaps by
    half its height or the band's, whichever is less."""
    lines: list[Line] = []
    for p in sorted(tall, key=lambda p: p.cy):
        for line in lines:
            overlap = min(p.y1, line.bottom) - max(p.y0, line.top)
            if overlap >= 0.5 * min(p.h, line.height):
                line.parts.append(p)
                _measure(line)
                break
        else:
            lines.append(Line(parts=[p], height=p.h, top=p.y0, bottom=p.y1))
    return sorted(lines, key=lambda line: line.top)


def _measure(line: Line) -> None:
    line.top = float(np.median([p.y0 for p in line.parts]))
    line.bottom = float(np.median([p.y1 for p in line.parts]))
    line.height = line.bottom - line.top


def _place_small(p: Part, lines: list[Line]) -> None:
    """A small piece: part of a digit (a 5's flag, a 7's bar), a mark, or nothing (outside
    every line)."""
    near = [ln for ln in lines if ln.top - 0.3 * ln.height <= p.cy <= ln.bottom + 0.4 * ln.height]
    if not near:
        return
    line = min(near, key=lambda ln: abs(p.cy - (ln.top + ln.bottom) / 2))
    h = line.height
    # One of a digit's strokes lies over or under it and close; a mark lies beside.
    apart = not any(
        min(p.x1, q.x1) - max(p.x0, q.x0) >= 0.5 * p.w and _near(p, q, max(2, round(0.04 * h)))
        for q in line.parts
    )
    # A dot: round and solid (a broken stroke's fragment is neither), about a pen's width
    # across, on the baseline (a comma reaches below it).
    dot = (
        max(p.w, p.h) <= 2 * min(p.w, p.h)
        and p.mask.mean() >= 0.6
        and 0.08 * h <= max(p.w, p.h) <= 0.35 * h
        and p.y1 >= line.bottom - 0.12 * h
    )
    if apart and dot:
        line.marks.append(Mark("." if p.y1 <= line.bottom + 0.12 * h else ",", p))
    elif (
        apart
        and p.h <= 0.25 * h
        and p.w >= 2 * p.h
        and abs(p.cy - (line.top + h / 2)) < h / 4
        and p.x1 < min(q.x0 for q in line.parts if q.h >= TALL * h)  # a leading minus
    ):
        line.marks.append(Mark("-", p))
    else:
        line.parts.append(p)


def _near(p: Part, q: Part, r: int) -> bool:
    """Whether any ink of ``q`` lies within ``r`` pixels of ``p``'s box."""
    y0, y1 = max(p.y0 - r, q.y0), min(p.y1 + r, q.y1)
    x0, x1 = max(p.x0 - r, q.x0), min(p.x1 + r, q.x1)
    return y0 < y1 and x0 < x1 and bool(q.mask[y0 - q.y0 : y1 - q.y0, x0 - q.x0 : x1 - q.x0].any())


def _cut(p: Part, height: float) -> list[Part]:
    """A piece wider than a digit, cut where digits most likely part: along the seams,
    top to bottom, that cross the least ink (where two digits touch, a seam crosses only
    the contact; through a digit it crosses two strokes), at least ``MIN_PIECE`` of the
    line's height apart and from the ends. A seam may bend round a 7's bar. Others whole."""
    if p.w <= WIDE * height:
        return [p]
    margin = max(1, round(MIN_PIECE * height))
    paths: list[np.ndarray] = []
    for path in _seams(p.mask):
        x = float(path.mean())
        if margin <= x <= p.w - margin and all(abs(x - q.mean()) >= margin for q in paths):
            paths.append(path)
        if len(paths) >= CUTS_PER_HEIGHT * p.w / height:
            break
    # Where no seam fell, cuts at even steps, each the least-ink path near its column.
    means = sorted([0.0, *(float(q.mean()) for q in paths), float(p.w)])
    for a, b in pairwise(means):
        n = int((b - a) / margin) - 1
        for k in range(1, n + 1):
            paths.append(_path(p.mask, round(a + k * (b - a) / (n + 1)), margin // 2))
    cols = np.arange(p.w)[None, :]
    bounds = [np.zeros(p.h, int), *sorted(paths, key=np.mean), np.full(p.h, p.w)]
    pieces = []
    for k, (a, b) in enumerate(pairwise(bounds)):
        piece = p.mask & (cols >= a[:, None]) & (cols < b[:, None])
        if piece.any():
            pieces.append(_trim(Part(p.y0, p.x0, piece, cut=k > 0)))
    return pieces


def _seams(mask: np.ndarray, step: float = 0.2) -> list[np.ndarray]:
    """Top-to-bottom paths through ``mask`` (per row, a column), cheapest first: the
    cheapest path to each bottom column, each ink pixel crossed costing 1 and each step
    sideways ``step``."""
    cost = mask.astype(np.float32)
    total, back = cost[0].copy(), np.zeros(cost.shape, np.int8)
    for r in range(1, len(cost)):
        moves = np.stack([np.r_[np.inf, total[:-1]], total, np.r_[total[1:], np.inf]])
        moves[[0, 2]] += step
        k = moves.argmin(0)
        total = moves[k, np.arange(len(total))] + cost[r]
        back[r] = k - 1
    paths = np.empty((len(cost), len(total)), int)
    paths[-1] = np.arange(len(total))
    for r in range(len(cost) - 1, 0, -1):
        paths[r - 1] = paths[r] + back[r, paths[r]]
    return [paths[:, x] for x in np.argsort(total, kind="stable")]


def _path(mask: np.ndarray, start: int, half: int) -> np.ndarray:
    """Per row, the column of the top-to-bottom path through ``mask`` within ``half`` of
    ``start`` that crosses the fewest ink pixels (a step sideways costs a little)."""
    lo, hi = max(0, start - half), min(mask.shape[1], start + half + 1)
    return _seams(mask[:, lo:hi], step=0.1)[0] + lo


def _trim(p: Part) -> Part:
    """The piece's box shrunk to its pixels."""
    rows, cols = np.flatnonzero(p.mask.any(1)), np.flatnonzero(p.mask.any(0))
    mask = p.mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return Part(p.y0 + int(rows[0]), p.x0 + int(cols[0]), mask, p.cut)


def union_box(parts: list[Part]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) around ``parts``."""
    return (min(p.y0 for p in parts), max(p.y1 for p in parts),
            min(p.x0 for p in parts), max(p.x1 for p in parts))  # fmt: skip


def union_mask(parts: list[Part]) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The box around ``parts`` and their pixels in it."""
    y0, y1, x0, x1 = box = union_box(parts)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for p in parts:
        mask[p.y0 - y0 : p.y1 - y0, p.x0 - x0 : p.x1 - x0] |= p.mask
    return box, mask
