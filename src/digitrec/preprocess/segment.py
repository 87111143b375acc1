"""Finding the digits of a number: the ink's pieces, grouped into lines, with the marks
(decimal point, comma, minus) told from digits by size and place.

Which pieces make one digit (a 5's flag, a 4 in two strokes) and where touching digits
part is not decided here: each line is a row of ``Part``s, and the reader
(digitrec.reading) lets the models decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

SPECK = 0.06  # a piece smaller than this share of a digit's height each way is a speck
TALL = 0.5  # a piece at least this share of the typical digit's height is (part of) a digit
WIDE = 1.2  # a piece wider than this share of its line's height may be touching digits
COMMA = 1.3  # a mark reaching below the baseline this much taller than wide is a comma


@dataclass
class Part:
    """A piece of ink: a connected component."""

    y0: int
    x0: int
    mask: np.ndarray  # bool, the piece's own pixels within its box

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

    @property
    def touching(self) -> bool:
        """Whether some piece is wider than a digit: digits that touch or overlap."""
        return any(p.w > WIDE * self.height for p in self.parts)


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
        line.parts.sort(key=lambda p: p.cx)
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
    # across, on the baseline; a comma is one with a tail: taller than wide, reaching below.
    dot = (
        max(p.w, p.h) <= 2 * min(p.w, p.h)
        and p.mask.mean() >= 0.6
        and 0.08 * h <= max(p.w, p.h) <= 0.35 * h
        and p.y1 >= line.bottom - 0.12 * h
    )
    if apart and dot:
        comma = p.h >= COMMA * p.w and p.y1 > line.bottom + 0.12 * h
        line.marks.append(Mark("," if comma else ".", p))
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
