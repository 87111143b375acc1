"""The junk the trust benchmark hands the recognizer: drawn as the pad posts, by seed."""

import io

import numpy as np
from PIL import Image

from digitrec import outliers
from digitrec.preprocess import preprocess


def test_each_kind_is_a_drawing_on_the_pad_and_the_same_for_the_same_seed():
    for kind, render in outliers.KINDS.items():
        png = render(np.random.default_rng(3))
        assert png == render(np.random.default_rng(3)), kind
        img = Image.open(io.BytesIO(png))
        assert img.size == (outliers.PAD, outliers.PAD) and img.mode == "L", kind
        assert not preprocess(png).blank, kind  # something to answer, not an empty page


def test_no_letter_or_symbol_is_one_a_hand_writes_as_a_digit():
    assert not set(outliers.LETTERS) & set("OoIlSZzBgq")
    assert not set(outliers.SYMBOLS) & set("/[]!")
