"""Clean-up: specks and border marks dropped, pieces of a broken stroke kept together,
ruled lines erased and the strokes they cut bridged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from digitrec.preprocess.ops import grow

MIN_INK_PIXELS = 4


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


LINK_LEVEL = 0.5  # ink above this share of the threshold links pieces of one stroke
