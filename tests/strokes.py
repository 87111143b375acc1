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
