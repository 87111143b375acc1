"""The robustness canaries ``digitrec learn``'s gate watches: validation digits redrawn
with a pen and shown as people hand them over (on the pad, on paper, scanned small,
blurred, cropped tight, as an outline: ``notdigit.presented``'s six ways), each way a
canary, through the pipeline to the 28x28 the model sees. A candidate that reads one of
them worse than the model it would replace has forgotten something MNIST's own
validation digits do not show."""

from __future__ import annotations

import hashlib

import numpy as np

from digitrec.data import Dataset, split_indices
from digitrec.notdigit import SPLIT_SEED, VAL_SIZE, drawn, presented
from digitrec.preprocess import preprocess

NAMES = ("pad", "paper", "small", "blurred", "tight", "outline")  # presented's `how`, in order
PER_CANARY = 400
SEED = 9100  # the canaries' own: not the detector's seeds


_made: dict[tuple[str, int], dict[str, tuple[np.ndarray, np.ndarray]]] = {}


def canaries(mnist: Dataset, n: int = PER_CANARY) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each canary's 28x28 inputs (float32) and labels; images the pipeline finds blank
    are left out (they get no digit from any model). Made once a process (seconds)."""
    key = (hashlib.sha256(mnist.train_images[:1000].numpy().tobytes()).hexdigest(), n)
    if key not in _made:
        _made[key] = _make(mnist, n)
    return _made[key]


def _make(mnist: Dataset, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    _, val = split_indices(len(mnist.train_images), VAL_SIZE, SPLIT_SEED)
    out = {}
    for how, name in enumerate(NAMES):
        rng = np.random.default_rng([SEED, how])
        idx = rng.choice(val.numpy(), n, replace=False)
        shown = [presented(drawn(mnist.train_images[i].numpy(), rng), rng, True, how) for i in idx]
        pre = [preprocess(img) for img in shown]
        keep = [i for i, p in enumerate(pre) if not p.blank]
        images = np.stack([pre[i].image for i in keep]).astype(np.float32)
        out[name] = images, mnist.train_labels[idx[keep]].numpy()
    return out
