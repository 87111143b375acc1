"""The one path from any image to the 28x28 input the models expect.

MNIST digits are light strokes on a black background, their bounding box
fitted into 20x20 pixels (aspect kept) and placed in a 28x28 frame so that the
center of mass sits at the center. Real input (a canvas, a scan, a photo) has
to be brought to the same form, or a 99% model guesses. Every front end (CLI,
GUI, web server) goes through ``preprocess``; nothing else converts images.

The stages live in the modules below, in the order an image meets them; this package
names everything they define, as the one module it was named.
"""

from digitrec.preprocess.cleanup import (  # noqa: F401
    LINK_LEVEL,
    MIN_INK_PIXELS,
    PEN_GAP,
    erase_band,
    keep_digit,
    remove_lines,
)
from digitrec.preprocess.decode import (  # noqa: F401
    FORMAT_NAMES,
    FORMATS,
    IMAGE_SUFFIXES,
    MAX_IMAGE_BYTES,
    MAX_PIXELS,
    PIL_FORMATS,
    Format,
    ImageLike,
    PixelBudget,
    decode,
    drop_unused_channels,
    eight_bit,
    empty,
    flatten,
    over_limit,
    size_text,
    upright,
)
from digitrec.preprocess.ink import (  # noqa: F401
    BLANK_CONTRAST,
    INK_THRESHOLD,
    background_map,
    dark_ink,
    dark_ink_local,
    hue_distance,
    ink_on_uneven,
    pad_along_plane,
    uneven,
)
from digitrec.preprocess.ops import (  # noqa: F401
    border_level,
    border_pixels,
    center_of_mass,
    clear_mass,
    disk,
    fit,
    grow,
    otsu,
    quantiles,
    resize,
    shrink,
)
from digitrec.preprocess.pipeline import (  # noqa: F401
    CLOSER_SIDE,
    DECODE_SIDE,
    REFINE_BELOW,
    WORK_SIDE,
    InkMap,
    Preprocessed,
    digit_input,
    ink_map,
    preprocess,
    source_box,
)
from digitrec.preprocess.place import deskew, place, recenter  # noqa: F401
from digitrec.preprocess.sheet import SHEET_RADIUS, SHEET_SHARE, edge_step, is_sheet, paper_beyond  # noqa: F401
from digitrec.preprocess.strokes import (  # noqa: F401
    FAINT_LEVEL,
    STROKE_KEPT,
    STROKE_MEASURE_SIDE,
    STROKE_MIN_SOURCE,
    STROKE_RANGE,
    STROKE_SIDE,
    STROKE_TARGET,
    normalize_stroke,
    stroke_width,
)
