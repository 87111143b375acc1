"""Tracing a real MNIST digit as pen strokes, for the tests that draw on a canvas."""

from __future__ import annotations

import numpy as np


def ink_runs(
    digit: np.ndarray, step: int = 2, threshold: int = 100
) -> list[tuple[float, float, float]]:
    """One horizontal stroke along each run of ink in every ``step``-th pixel row:
    (row, first column, last column), in pixel-centre units of the 28x28 image. With a
    brush about two MNIST pixels wide, the strokes cover the digit."""
    runs = []
    for r in range(0, digit.shape[0], step):
        row = digit[r] > threshold
        c = 0
        while c < row.size:
            if not row[c]:
                c += 1
                continue
            start = c
            while c < row.size and row[c]:
                c += 1
            runs.append((r + 0.5, start + 0.5, c - 0.5))
    return runs


# Strokes as a person writes them, in a unit box (x right, y down): a 4 in two strokes, a
# 2, a 3, a 5 in one.
PEN = {
    "4": [[(0.55, 0.0), (0.05, 0.65), (0.8, 0.65)], [(0.6, 0.3), (0.6, 1.0)]],
    "2": [[(0.05, 0.25), (0.25, 0.02), (0.6, 0.0), (0.8, 0.2), (0.7, 0.5), (0.0, 1.0),
           (0.85, 1.0)]],
    "3": [[(0.1, 0.12), (0.35, 0.0), (0.7, 0.05), (0.8, 0.25), (0.5, 0.47), (0.85, 0.65),
           (0.8, 0.9), (0.45, 1.0), (0.05, 0.88)]],
    "5": [[(0.8, 0.0), (0.2, 0.0), (0.12, 0.45), (0.5, 0.38), (0.85, 0.6), (0.75, 0.92),
           (0.4, 1.0), (0.05, 0.88)]],
}  # fmt: skip


def written(text: str, left: float, top: float, size: float) -> list[list[tuple[float, float]]]:
    """The strokes of ``text`` (characters of ``PEN``), each ``size`` tall and 0.6 of that
    wide, 0.8 of ``size`` apart, from (left, top), in the caller's pixels."""
    return [
        [(left + k * 0.8 * size + x * 0.6 * size, top + y * size) for x, y in stroke]
        for k, ch in enumerate(text)
        for stroke in PEN[ch]
    ]


def _coil() -> list[tuple[float, float]]:
    """Four loops run together left to right, as a pen doodles: no digit."""
    turns = np.linspace(np.pi, 3 * np.pi, 9)[:-1]
    return [(0.2 + 0.18 * k + 0.13 * np.cos(t), 0.5 + 0.2 * np.sin(t))
            for k in range(4) for t in turns]  # fmt: skip


# Drawings that are not plain digits, in a unit box: a scribble, and a 1 whose flag is long
# enough to make it a 7 (the shipped model, on the page: 7 at 77%, 1 at 22%, "not sure").
SHAPES = {
    "scribble": [_coil()],
    "1 or 7": [[(0.4, 0.18), (0.6, 0.05), (0.55, 0.95)]],
}


def shape(name: str, left: float, top: float, size: float) -> list[list[tuple[float, float]]]:
    """The strokes of ``SHAPES[name]`` in a ``size`` px square at (left, top)."""
    return [[(left + x * size, top + y * size) for x, y in stroke] for stroke in SHAPES[name]]
