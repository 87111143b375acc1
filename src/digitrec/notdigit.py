"""The "not a digit" detector: a small CNN that tells a digit from junk.

A digit model answers every input with some digit, often sure of it: a scribble reads as
an 8, a letter A as a 4. The detector sees the same 28x28 the digit model sees and says
whether it is a digit at all. It is trained with outlier exposure: digits of the training
split (as scanned, and redrawn and shown as people hand them over, ``presented``) against
junk (``digitrec.outliers``: scribbles, letters, symbols, blots, dots, from seeds of its
own; Fashion-MNIST's training images), each through the preprocessing pipeline. Its
threshold is chosen on the validation split: the score only ``FALSE_ALARMS`` of
validation digits exceed. It does not depend on the digit model, so one detector serves
them all: saved as ``NAME.notdigit.safetensors`` beside a digit model, else the shipped
one is used.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from digitrec import outliers
from digitrec.augment import Augment, augment_batch
from digitrec.checkpoint import load_model, save_model
from digitrec.compose import pen_strokes, to_u8
from digitrec.data import load_dataset, split_indices
from digitrec.errors import CheckpointError, DigitrecError
from digitrec.fit import fit_classifier
from digitrec.models import build_model, inference_module, resolve_device
from digitrec.preprocess import preprocess
from digitrec.recipes import TrainConfig
from digitrec.records import now

Rng = np.random.Generator
CLASSES = ["digit", "not a digit"]
ARCH = "mid"  # measured against `fast`: as many false alarms, more junk flagged
FALSE_ALARMS = 0.002  # the share of validation digits the detector alone may flag
BATCH, LR = 256, 2e-3
# Outlier seeds: [seed, TRAIN_SEEDS + kind] to train, VAL_SEEDS to choose the threshold;
# benchmarks/trust.py draws its own from [seed, 1000 + kind].
TRAIN_SEEDS, VAL_SEEDS = 7000, 8000
FASHION_VAL = 5000  # Fashion-MNIST's last training images: validation junk, never trained on
# The project's validation split (``digitrec train``'s defaults): never trained on here.
VAL_SIZE, SPLIT_SEED = TrainConfig.val_size, TrainConfig.split_seed
PAD = outliers.PAD


# ------------------------------------------------------------------ examples


def _ink(png: bytes) -> np.ndarray:
    """A pad render (light ink on black) as ink in [0, 1]."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32) / 255


def drawn(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """A training digit (uint8 28x28) redrawn with a pen at 30 to 250 px on the pad; a
    third of them small (30-80 px) with a pen too thick for their size."""
    small = rng.random() < 1 / 3
    strokes = pen_strokes(digit, int(rng.integers(30, 81) if small else rng.integers(60, 251)))
    if small:
        img = Image.fromarray(to_u8(strokes)).filter(ImageFilter.MaxFilter(int(rng.choice([3, 5]))))
        strokes = np.asarray(img, np.float32) / 255
    h, w = strokes.shape
    out = np.zeros((PAD, PAD), np.float32)
    y, x = rng.integers(0, PAD - h + 1), rng.integers(0, PAD - w + 1)
    out[y : y + h, x : x + w] = strokes
    return out


def _tight(ink: np.ndarray, height: int) -> np.ndarray:
    """The ink cropped to its box and scaled to ``height`` px tall: a form's small cell."""
    rows, cols = np.flatnonzero(ink.max(1) > 0.3), np.flatnonzero(ink.max(0) > 0.3)
    if not len(rows):
        return ink
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    width = max(1, round(crop.shape[1] * height / crop.shape[0]))
    img = Image.fromarray(to_u8(crop)).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(img, np.float32) / 255


def presented(ink: np.ndarray, rng: Rng, rough: bool, how: int | None = None) -> np.ndarray:
    """Ink shown as people hand it over: on the pad, dark on paper with uneven light and
    noise, or scanned small, digit or junk alike (so that these are no cue for what it
    is); and, if ``rough``, also blurred, cropped tight into a cell 8 to 20 px tall, or
    only the outline of its strokes (an edge filter's). Digits are shown rough, junk not:
    rough junk as well kept fewer rough digits from being called junk than it let junk
    through (docs/results.md). ``how``: one of these, in that order (``digitrec.canaries``)."""
    how = rng.integers(6 if rough else 3) if how is None else how
    if how == 1:
        light = 0.75 + rng.uniform(-0.2, 0.2) * np.linspace(-1, 1, PAD)[None, :]
        page = light * (1 - rng.uniform(0.4, 0.9) * ink) + rng.normal(0, 0.02, ink.shape)
        return to_u8(page)
    if how == 2:
        side = int(rng.integers(28, 100))
        small = Image.fromarray(to_u8(ink)).resize((side, side), Image.Resampling.LANCZOS)
        return np.asarray(small)
    if how == 3:  # by 2-6% of the ink's height: a blurred digit is still a digit
        rows = np.flatnonzero(ink.max(1) > 0.3)
        height = rows[-1] - rows[0] + 1 if len(rows) else PAD
        blur = ImageFilter.GaussianBlur(float(rng.uniform(0.02, 0.06) * height))
        return np.asarray(Image.fromarray(to_u8(ink)).filter(blur))
    if how == 4:
        return to_u8(_tight(ink, int(rng.integers(8, 21))))
    if how == 5:
        img = Image.fromarray(to_u8(ink))
        width = int(rng.choice([3, 5, 7]))
        edges = np.asarray(img, np.float32) - np.asarray(img.filter(ImageFilter.MinFilter(width)))
        return to_u8(edges / 255)
    return to_u8(ink)


def _through_pipeline(images: list[Any]) -> np.ndarray:
    """The 28x28 inputs the digit model would see; images the pipeline finds blank are
    left out (they are answered "no digit" before any model)."""
    kept = [p.image for p in map(preprocess, images) if not p.blank]
    return np.stack(kept).astype(np.float32) if kept else np.empty((0, 28, 28), np.float32)


def _job(name: str, images: np.ndarray | None, n: int, seed: list[int]) -> np.ndarray:
    """One share of the examples, from its own seed: ``digits`` or ``fashion`` as
    scanned, ``drawn`` digits presented, or ``n`` renders of an outlier kind presented."""
    rng = np.random.default_rng(seed)
    if name in ("digits", "fashion"):
        return _through_pipeline(list(images))
    if name == "drawn":
        return _through_pipeline([presented(drawn(d, rng), rng, rough=True) for d in images])
    render = outliers.KINDS[name]
    return _through_pipeline([presented(_ink(render(rng)), rng, rough=False) for _ in range(n)])


def examples(
    digits: np.ndarray,
    fashion: np.ndarray,
    junk: int,
    seeds: int,
    seed: int,
    skip: str = "",
    workers: int = 2,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Digits (``digits`` as scanned, and half of them again drawn and presented) and
    junk by kind: ``junk`` renders of each outlier kind but ``skip``, presented, and
    ``fashion`` as scanned; each the pipeline's output. The same for a seed whatever the
    number of ``workers`` (processes)."""
    some = digits[np.random.default_rng([seed, seeds]).permutation(len(digits))]
    jobs = {"digits": digits, "drawn": some[: len(digits) // 2], "fashion": fashion}
    jobs |= {kind: None for kind in outliers.KINDS if kind != skip}
    names = ["digits", "drawn", "fashion", *outliers.KINDS]  # each job's seed, skip or not
    args = [
        (name, images, junk, [seed, seeds + names.index(name)]) for name, images in jobs.items()
    ]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            done = list(ex.map(_job, *zip(*args, strict=True)))
    else:
        done = [_job(*a) for a in args]
    out = dict(zip(jobs, done, strict=True))
    x_digits = np.concatenate([out.pop("digits"), out.pop("drawn")])
    return x_digits, out


# ------------------------------------------------------------------ the detector


class NotDigit:
    """A loaded detector. ``scores`` of model inputs (N, 28, 28) in [0, 1]: above
    ``threshold``, not a digit. Safe to share between threads."""

    def __init__(self, model: nn.Module, meta: dict[str, Any], path: Path | None = None):
        self.model = model.eval()
        self.meta = meta
        self.path = path
        record = meta.get("not_digit") or {}
        if "threshold" not in record:
            raise CheckpointError(f"{path}: not a 'not a digit' detector (no threshold)")
        self.threshold = float(record["threshold"])
        self.device = next(model.parameters()).device
        self._run = inference_module(self.model)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> NotDigit:
        model, meta = load_model(path, device)
        return cls(model, meta, path)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """How far each image is from a digit: the junk logit minus the digit logit."""
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)[:, None]).to(self.device)
        with self._lock, torch.inference_mode():
            z = [self._run(part).float().cpu() for part in x.split(BATCH * 4)]
        z = torch.cat(z) if z else torch.empty(0, len(CLASSES))
        return (z[:, 1] - z[:, 0]).numpy()

    def flags(self, images: np.ndarray) -> np.ndarray:
        return self.scores(images) > self.threshold


# ------------------------------------------------------------------ training


def train_notdigit_model(
    out: Path,
    digits: int = 30000,
    junk: int = 4000,
    epochs: float = 8.0,
    seed: int = 0,
    device: str = "auto",
    data_dir: str | None = None,
    skip: str = "",
    workers: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a detector at ``out``: ``digits`` training-split digits and ``junk`` renders
    of each outlier kind (but ``skip``, to measure one never seen) plus as many
    Fashion-MNIST training images as the kinds together. Returns what was measured on
    validation (other digits, other seeds, other Fashion images)."""
    if skip and skip not in outliers.KINDS:
        raise DigitrecError(f"--skip {skip}: choose one of {', '.join(outliers.KINDS)}")
    dev = resolve_device(device)
    mnist = load_dataset("mnist", data_dir, log=log)
    fashion = load_dataset("fashion-mnist", data_dir, log=log).train_images.numpy()
    train_idx, val_idx = split_indices(len(mnist.train_images), VAL_SIZE, SPLIT_SEED)
    images = mnist.train_images.numpy()
    rng = np.random.default_rng(seed)
    pick = train_idx.numpy()[rng.permutation(len(train_idx))[:digits]]
    t0 = time.perf_counter()
    n_fashion = min(junk * len(outliers.KINDS), len(fashion) - FASHION_VAL)
    xd, kinds = examples(images[pick], fashion[:n_fashion], junk, TRAIN_SEEDS, seed, skip, workers)
    xj = np.concatenate(list(kinds.values()))
    # Validation a sixth the size of training, at most the whole split: 5,000 by default.
    val = val_idx.numpy()[: max(1, digits // 6)]
    vf = fashion[-FASHION_VAL:][: max(1, n_fashion // 4)]
    vd, vkinds = examples(images[val], vf, max(1, junk // 5), VAL_SEEDS, seed, "", workers)
    log(f"{len(xd)} digits and {len(xj)} junk images to train on, {len(vd)} validation "
        f"digits, in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    torch.manual_seed(seed)
    model = build_model(ARCH, len(CLASSES)).to(dev)
    x = np.concatenate([xd, xj])
    y = np.r_[np.zeros(len(xd), np.int64), np.ones(len(xj), np.int64)]
    seconds = _fit(model, x, y, epochs, seed, log)
    detector = NotDigit(model, {"not_digit": {"threshold": 0.0}})
    threshold = float(np.quantile(detector.scores(vd), 1 - FALSE_ALARMS))
    detector.threshold = threshold
    validation = {
        "digits_flagged": float(detector.flags(vd).mean()),
        **{f"{k}_flagged": float(detector.flags(v).mean()) for k, v in vkinds.items()},
    }
    record = {
        "model": ARCH,
        "classes": CLASSES,
        "input": [1, 28, 28],
        "run": out.stem,
        "created": now(),
        "command": " ".join(["digitrec", *sys.argv[1:]]),
        "not_digit": {
            "threshold": threshold,
            "false_alarms": FALSE_ALARMS,
            "digits": digits,
            "junk_per_kind": junk,
            "skipped_kind": skip or None,
            "epochs": epochs,
            "seed": seed,
            "examples": {"digits": len(xd), "junk": len(xj)},
            "seconds": round(seconds, 1),
            "validation": validation,
        },
    }
    save_model(out, model.eval(), record)
    return record["not_digit"]


def _fit(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: float, seed: int, log) -> float:
    """Every batch moved, turned and roughened as the digit models' training batches are,
    junk and digits alike. Returns the seconds it took."""
    aug = Augment()
    return fit_classifier(model, torch.from_numpy(x)[:, None], torch.from_numpy(y),
                          lambda xb, g: augment_batch(xb, aug, g), epochs, seed, BATCH, LR,
                          warmup=0.15, log=log)  # fmt: skip
