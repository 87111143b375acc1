"""The reading model: a digit model taught to say when a crop is not one whole digit.

Reading a line of digits that stand apart tries many groupings of its pieces
(``reading.crops``): one stroke of a digit written in two, two neighbours together. A
model trained on single digits reads most of them confidently as *some* digit, so the
reader cannot tell the right grouping from a wrong one. This one is fine-tuned from a
digit model with an 11th class, ``none``, on exactly those crops: numbers composed from
training-split digits (``compose``), grouped by the reader itself, each crop labelled
with the digit it holds or ``none``, mixed with the training split's digits so single
digits stay as they were. (Lines of touching digits are the line model's.)

It is saved beside its digit model as ``NAME.reader.safetensors``;
``Predictor.reading_model`` finds it there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from digitrec.checkpoint import load_model, save_model
from digitrec.compose import Number, compose
from digitrec.data import load_dataset, split_indices
from digitrec.errors import DigitrecError
from digitrec.fit import fit_classifier
from digitrec.models import batched_logits, resolve_device
from digitrec.preprocess import ink_map
from digitrec.preprocess.segment import find_lines
from digitrec.reading import NONE, READ_SIDE, crops
from digitrec.recipes import TrainConfig
from digitrec.records import now

Rng = np.random.Generator
# Gaps between neighbours, px of MNIST's grid, and how often: apart, touching, overlapping.
SPACING = [((2.0, 8.0), 0.3), ((0.0, 0.0), 0.35), ((-3.0, -1.0), 0.35)]
WHOLE = 0.8  # a crop holding this share of one digit's ink, and
STRAY = 0.15  # less than this share of any other digit's, is that digit;
PART = 0.55  # one holding less than this share of any digit, or
MIXED = 0.35  # this share of a second digit, is none. Others are left out.
BATCH, LR = 128, 1e-3
DIGITS = [str(d) for d in range(10)]
# The project's validation split (``digitrec train``'s defaults): never trained on here.
VAL_SIZE, SPLIT_SEED = TrainConfig.val_size, TrainConfig.split_seed


def labelled_crops(number: Number, labels: list[int]) -> tuple[list[np.ndarray], list[int]]:
    """The reader's crops of a composed number (uint8 28x28) and their labels: the digit a
    crop holds, or ``10`` (none). The number must be drawn at its own size (< READ_SIDE)."""
    ink = ink_map(number.canvas(), READ_SIDE)
    if ink.record.blank or ink.ink.shape != number.owner.shape:
        return [], []
    owner = number.owner
    totals = np.bincount(owner[owner >= 0], minlength=len(labels))
    images, ys = [], []
    for line in find_lines(ink.ink > ink.threshold):
        if line.touching:  # read whole by the line model: no crops tried
            continue
        for c in crops(ink, line):
            y0, y1, x0, x1 = c.box
            own = owner[y0:y1, x0:x1][c.mask]
            share = np.bincount(own[own >= 0], minlength=len(labels)) / np.maximum(totals, 1)
            k = int(share.argmax())
            second = float(np.delete(share, k).max()) if len(labels) > 1 else 0.0
            if share[k] >= WHOLE and second < STRAY:
                y = labels[k]
            elif share[k] < PART or second >= MIXED:
                y = 10
            else:
                continue
            if not c.image.blank:
                images.append((c.image.image * 255).round().astype(np.uint8))
                ys.append(y)
    return images, ys


def composed_examples(
    images: np.ndarray, labels: np.ndarray, n: int, rng: Rng
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled crops of ``n`` numbers of 2 to 5 digits drawn 40-100 px tall."""
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for _ in range(n):
        gaps = SPACING[rng.choice(len(SPACING), p=[w for _, w in SPACING])][0]
        idx = rng.choice(len(images), int(rng.integers(2, 6)), replace=False)
        number = compose([images[i] for i in idx], rng, gaps, int(rng.integers(40, 100)))
        x, y = labelled_crops(number.framed(0.3, rng), [int(labels[i]) for i in idx])
        xs += x
        ys += y
    return np.stack(xs).reshape(-1, 28, 28), np.asarray(ys, np.int64)


def with_none_class(model: nn.Sequential) -> nn.Sequential:
    """``model`` with an 11th output, ``none``, that starts out never chosen."""
    head = model[-1]
    if not isinstance(head, nn.Linear) or head.out_features != 10:
        raise DigitrecError(
            "a reading model is made from a 10-digit model ending in a Linear layer"
        )
    wider = nn.Linear(head.in_features, 11).to(head.weight.device)
    with torch.no_grad():
        wider.weight.zero_()
        wider.bias.fill_(-5.0)
        wider.weight[:10], wider.bias[:10] = head.weight, head.bias
    model[-1] = wider
    return model


def train_reading_model(
    base: Path,
    out: Path,
    numbers: int = 16000,
    epochs: float = 1.2,
    seed: int = 0,
    device: str = "auto",
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fine-tune ``base`` into a reading model at ``out``; returns what was measured on the
    validation split (digits, and crops of numbers composed from validation digits)."""
    model, meta = load_model(base, resolve_device(device))
    if meta.get("model") == "ensemble" or meta.get("classes", DIGITS) != DIGITS:
        raise DigitrecError(f"{base}: a reading model is made from one MNIST digit model")
    ds = load_dataset("mnist", data_dir, log=log)
    train_idx, val_idx = split_indices(len(ds.train_images), VAL_SIZE, SPLIT_SEED)
    images, labels = ds.train_images.numpy(), ds.train_labels.numpy()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    cx, cy = composed_examples(images[train_idx], labels[train_idx], numbers, rng)
    vx, vy = composed_examples(images[val_idx], labels[val_idx], max(1, numbers // 10), rng)
    log(f"{len(cx)} crops of {numbers} training numbers ({(cy == 10).mean():.0%} none), "
        f"{len(vx)} validation crops, in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    before = _scores(model, images[val_idx], labels[val_idx])
    model = with_none_class(model)
    x = np.concatenate([cx, images[train_idx]])
    y = np.concatenate([cy, labels[train_idx]])
    seconds = _fine_tune(model, x, y, epochs, seed, log)
    after = {
        **_scores(model, images[val_idx], labels[val_idx]),
        "crops_acc": _accuracy(model, vx, vy),
        "crops_none_recall": _accuracy(model, vx[vy == 10], vy[vy == 10]),
    }
    record = {
        "model": meta["model"],
        "dataset": "mnist",
        "classes": [*DIGITS, NONE],
        "normalization": meta.get("normalization"),
        "input": [1, 28, 28],
        "run": out.stem,
        "created": now(),
        "command": " ".join(["digitrec", *sys.argv[1:]]),
        "reading": {
            "base": str(base),
            "base_sha256": meta.get("tensors_sha256"),
            "numbers": numbers,
            "epochs": epochs,
            "seed": seed,
            "crops": len(cx),
            "seconds": round(seconds, 1),
            "validation_before": before,
            "validation": after,
        },
    }
    save_model(out, model.eval(), {k: v for k, v in record.items() if v is not None})
    return record["reading"]


def _fine_tune(
    model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: float, seed: int, log
) -> float:
    """A few passes at a low, one-cycle learning rate; each batch shifted by up to 2 px so
    that where a crop sits in its frame is no cue. Returns the seconds it took."""

    def shifted(xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
        return torch.roll(xb.float().div(255).unsqueeze(1), (dy, dx), (2, 3))

    torch.manual_seed(seed)
    return fit_classifier(model, torch.from_numpy(x), torch.from_numpy(y), shifted, epochs,
                          seed, BATCH, LR, warmup=0.1, label_smoothing=0.05, log=log)  # fmt: skip


def _logits(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    device = next(model.parameters()).device
    batch = torch.from_numpy(x).float().div(255).unsqueeze(1).to(device)
    with torch.inference_mode():
        return batched_logits(model, batch).cpu()


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((_logits(model, x).argmax(1).numpy() == y).mean()) if len(y) else float("nan")


def _scores(model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """On single digits: accuracy over the ten digits, and the share called none."""
    logits = _logits(model, x)
    return {
        "digits_acc": float((logits[:, :10].argmax(1).numpy() == y).mean()),
        "digits_none": float((logits.argmax(1) == 10).float().mean())
        if logits.shape[1] > 10
        else 0.0,
    }
