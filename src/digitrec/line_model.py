"""The line model: reads a line of digits whole, touching or overlapping, with no cuts.

Cutting touching digits apart fails where no cut separates them (a 1 leaning into a 7,
strokes that cross); a model that reads the whole line and says which digits it holds,
in order, needs no cut (CTC, as text readers are trained). It is trained on lines
composed from training-split digits (``compose``): 1 to 8 digits, apart, touching and
overlapping, some with a decimal point, 40-100 px tall, each brought to the model's input
by ``reading.line_input`` through the same ink map and line finding ``read`` uses; in
training, some with a thicker or thinner pen, some as a photo's ink map can be.

Saved as ``NAME.lines.safetensors`` beside a digit model (the shipped one:
``default.lines.safetensors``); ``Predictor.line_model`` finds it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from digitrec.checkpoint import save_model
from digitrec.compose import compose, to_u8
from digitrec.data import load_dataset, split_indices
from digitrec.models import LINE_HEIGHT, LINE_MODEL, LineModel, resolve_device
from digitrec.preprocess import ink_map
from digitrec.preprocess.segment import find_lines
from digitrec.reading import READ_SIDE, ctc_runs, line_input
from digitrec.recipes import TrainConfig
from digitrec.records import now

# Gaps between neighbours, px of MNIST's grid, and how often: apart, touching,
# overlapping, anything from overlapping to apart.
SPACING = [((2.0, 8.0), 0.25), ((0.0, 0.0), 0.25), ((-3.0, -1.0), 0.25), ((-3.0, 8.0), 0.25)]
POINT = 0.15  # the share of lines with a decimal point (read apart, as a mark)
CHUNK = 500  # lines composed per task, each chunk from its own seed
BATCH, LR = 32, 2e-3
CLASSES = ["blank", *(str(d) for d in range(10))]
VAL_SIZE, SPLIT_SEED = TrainConfig.val_size, TrainConfig.split_seed


@dataclass
class Lines:
    images: list[np.ndarray]  # uint8 (LINE_HEIGHT, W): the model's inputs
    labels: list[np.ndarray]  # the digits of each, in order


def composed_line(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """One line of 1 to 8 digits as ``read`` would hand it to the line model, and its
    digits; None when the line finder does not see exactly one line."""
    gaps = SPACING[rng.choice(len(SPACING), p=[w for _, w in SPACING])][0]
    n = int(rng.integers(1, 9))
    idx = rng.choice(len(images), n, replace=False)
    point = int(rng.integers(0, n - 1)) if n > 1 and rng.random() < POINT else None
    number = compose([images[i] for i in idx], rng, gaps, int(rng.integers(40, 100)), point)
    ink = ink_map(number.framed(0.3, rng).canvas(), READ_SIDE)
    lines = [] if ink.record.blank else find_lines(ink.ink > ink.threshold)
    if len(lines) != 1:
        return None
    return to_u8(line_input(ink, lines[0]).image), labels[idx].astype(np.int64)


_POOL: tuple[np.ndarray, np.ndarray] | None = None  # a worker's digits


def _share(images: np.ndarray, labels: np.ndarray) -> None:
    global _POOL
    _POOL = (images, labels)


def _chunk(task: tuple[np.random.SeedSequence, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    assert _POOL is not None
    seed, size = task
    rng = np.random.default_rng(seed)
    return [x for _ in range(size) if (x := composed_line(*_POOL, rng)) is not None]


def composed_lines(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int, workers: int = 2
) -> Lines:
    """About ``n`` lines (whole chunks; the few the line finder splits left out), the
    same for a seed whatever the number of workers."""
    size = min(CHUNK, n)
    tasks = [(s, size) for s in np.random.SeedSequence(seed).spawn(max(1, round(n / size)))]
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_share, initargs=(images, labels)) as ex:
            chunks = list(ex.map(_chunk, tasks))
    else:
        _share(images, labels)
        chunks = [_chunk(t) for t in tasks]
    made = [x for c in chunks for x in c]
    return Lines([x for x, _ in made], [y for _, y in made])


def _batch(lines: Lines, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images padded with empty columns to the widest, and the CTC targets (class = digit
    + 1) with their lengths."""
    width = max(lines.images[i].shape[1] for i in idx)
    x = np.zeros((len(idx), 1, LINE_HEIGHT, width + width % 2), np.float32)
    for k, i in enumerate(idx):
        x[k, 0, :, : lines.images[i].shape[1]] = lines.images[i] / 255.0
    targets = torch.from_numpy(np.concatenate([lines.labels[i] for i in idx]) + 1)
    lengths = torch.tensor([len(lines.labels[i]) for i in idx])
    return torch.from_numpy(x), targets, lengths


def _pen(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A fifth of batches drawn with a thicker pen, a seventh with a thinner one."""
    r = float(torch.rand(1, generator=g))
    if r < 0.2:
        return F.max_pool2d(x, 3, 1, 1)
    if r < 0.35:
        return F.pad(-F.max_pool2d(-x, 2, 1), (0, 1, 0, 1))
    return x


def _paper(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A third of batches as a photo's ink map can be: fainter, softer strokes on a patch
    of lamp-lit paper the background removal left (a grey block over part of the line),
    with grain."""
    if float(torch.rand(1, generator=g)) >= 1 / 3:
        return x
    n, _, h, w = x.shape
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    x = F.avg_pool2d(x, 3, 1, 1) * (0.5 + 0.5 * u(n, 1, 1, 1))
    cols, rows = torch.arange(w).view(1, 1, 1, w), torch.arange(h).view(1, 1, h, 1)
    x0, x1 = u(n, 1, 1, 1) * w / 2, (0.5 + 0.5 * u(n, 1, 1, 1)) * w
    y0, y1 = u(n, 1, 1, 1) * h / 3, (2 + u(n, 1, 1, 1)) * h / 3
    inside = (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
    patch = inside * (0.1 + 0.35 * u(n, 1, 1, 1))
    grain = 0.03 * torch.randn(x.shape, generator=g)
    return (torch.maximum(x, patch) + grain).clamp(0, 1)


def _batches(lines: Lines, rng: np.random.Generator) -> list[np.ndarray]:
    """An epoch's batches, each of lines of about one width (little padding), in random order."""
    widths = np.array([x.shape[1] for x in lines.images])
    order = np.argsort(widths + rng.uniform(0, 8, len(widths)))
    batches = [order[i : i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]
    rng.shuffle(batches)  # type: ignore[arg-type]
    return batches


def fit(
    model: LineModel, lines: Lines, epochs: float, seed: int, log: Callable[[str], None]
) -> float:
    """CTC training at a one-cycle learning rate; returns the seconds it took."""
    device = next(model.parameters()).device
    rng, g = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    steps = max(1, int(epochs * (len(lines.images) // BATCH)))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps, pct_start=0.15)
    model.train()
    t0, step = time.perf_counter(), 0
    while step < steps:
        for idx in _batches(lines, rng)[: steps - step]:
            x, targets, lengths = _batch(lines, idx)
            logp = F.log_softmax(model(_paper(_pen(x, g), g).to(device)), 1).permute(2, 0, 1).cpu()
            columns = torch.full((len(idx),), logp.shape[0], dtype=torch.long)
            loss = F.ctc_loss(logp, targets, columns, lengths, zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 500 == 0 or step == steps:
                log(f"step {step}/{steps}  loss {loss.item():.3f}  "
                    f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    model.eval()
    return time.perf_counter() - t0


def scores(model: LineModel, lines: Lines) -> dict[str, float]:
    """Lines read exactly right, and digits right where the count is right."""
    device = next(model.parameters()).device
    order = np.argsort([x.shape[1] for x in lines.images])
    exact, digits, total = 0, 0, 0
    with torch.inference_mode():
        for idx in np.array_split(order, max(1, len(order) // 64)):
            best = model(_batch(lines, idx)[0].to(device)).argmax(1).cpu().numpy()
            for i, b in zip(idx, best, strict=True):
                got = np.array([c - 1 for c, _ in ctc_runs(b)])
                truth = lines.labels[i]
                exact += bool(len(got) == len(truth) and (got == truth).all())
                digits += int((got == truth).sum()) if len(got) == len(truth) else 0
                total += len(truth)
    n = max(1, len(lines.images))
    return {"lines_exact": exact / n, "digits_in_place": digits / max(1, total)}


def train_line_model(
    out: Path,
    lines: int = 120_000,
    epochs: float = 3.0,
    seed: int = 0,
    device: str = "auto",
    data_dir: str | None = None,
    workers: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a line model from scratch and save it at ``out``; returns its record's
    training part (with what was measured on lines of validation-split digits)."""
    ds = load_dataset("mnist", data_dir, log=log)
    train_idx, val_idx = split_indices(len(ds.train_images), VAL_SIZE, SPLIT_SEED)
    images, labels = ds.train_images.numpy(), ds.train_labels.numpy()
    t0 = time.perf_counter()
    train = composed_lines(images[train_idx], labels[train_idx], lines, seed, workers)
    val = composed_lines(images[val_idx], labels[val_idx], max(CHUNK, lines // 20), seed + 1,
                         workers)  # fmt: skip
    log(f"{len(train.images)} training lines, {len(val.images)} validation lines, composed "
        f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    torch.manual_seed(seed)
    model = LineModel(len(CLASSES)).to(resolve_device(device))
    seconds = fit(model, train, epochs, seed, log)
    record: dict[str, Any] = {
        "model": LINE_MODEL,
        "dataset": "mnist",
        "classes": CLASSES,
        "normalization": {"mean": 0.1307, "std": 0.3081},
        "input": [1, LINE_HEIGHT, None],
        "run": out.stem,
        "created": now(),
        "command": " ".join(["digitrec", *sys.argv[1:]]),
        "training": {
            "lines": len(train.images),
            "epochs": epochs,
            "seed": seed,
            "seconds": round(seconds, 1),
            "validation": {**scores(model, val), "lines": len(val.images)},
        },
    }
    save_model(out, model.cpu().eval(), record)
    return record["training"]
