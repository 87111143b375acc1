"""Is the model what limits thin strokes? Train `best` on the stroke renders themselves.

The robustness benchmark's thin pen, fine pen and eroded strokes read 1 to 2 points below
clean digits. This renders ``--n`` *training-split* digits (never validation or test), each
as one of those three variants, runs them through the robust pipeline once, and trains
with a share of every batch drawn from them: ``--init default`` fine-tunes the shipped
model the way its second step was trained; ``--init scratch`` runs the whole `best`
recipe. It prints validation accuracy, clean and on renders of validation digits made the
same way, for the shipped model and the trained one, and saves the trained model so that
``robustness.py --split val --model-path OUT`` gives the full table (MNIST-C-style mean
included). An experiment, not a recipe: the renders are of the very kind it is scored on.

    python benchmarks/stroke_training.py [--n 36000] [--share 0.5] [--init default|scratch]
                                         [--epochs E] [--seed S] [--out stroke.safetensors]
                                         [--limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from digitrec.checkpoint import load_model, save_model
from digitrec.data import load_dataset, split_indices, to_float
from digitrec.models import batched_logits, build_model, resolve_device
from digitrec.preprocess import preprocess
from digitrec.recipes import make_config
from digitrec.runs import model_record, resolve_checkpoint
from digitrec.train import Stepper
from variants import eroded, fine, thin

KINDS = {"thin pen": thin, "fine pen": fine, "eroded strokes": eroded}


def render(job: tuple[np.ndarray, int, int, int]) -> np.ndarray:
    """One digit as one stroke variant, through the robust pipeline: the model's input."""
    digit, kind, seed, index = job
    image = list(KINDS.values())[kind](digit, np.random.default_rng([seed, index]))
    return preprocess(image).image


def render_all(digits: np.ndarray, kinds: np.ndarray, seed: int) -> torch.Tensor:
    jobs = [(d, int(k), seed, i) for i, (d, k) in enumerate(zip(digits, kinds, strict=True))]
    # Spawned, not forked: a child forked after torch started its thread pool can hang.
    spawn = get_context("spawn")
    with ProcessPoolExecutor(os.cpu_count(), spawn, torch.set_num_threads, (1,)) as pool:
        images = list(pool.map(render, jobs, chunksize=256))
    return torch.from_numpy(np.stack(images))[:, None]


def scores(model: nn.Module, x_val, y_val, renders, r_labels, r_kinds) -> str:
    """Clean validation accuracy, then each stroke variant's on validation renders."""
    with torch.no_grad():
        clean = (batched_logits(model, x_val).argmax(1) == y_val).float().mean().item()
        hit = (batched_logits(model, renders).argmax(1) == r_labels).numpy()
    parts = [f"clean {clean:.2%}"]
    parts += [f"{name} {hit[r_kinds == k].mean():.2%}" for k, name in enumerate(KINDS)]
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=36000, help="training digits rendered")
    ap.add_argument("--val-n", type=int, default=1000, help="validation digits rendered")
    ap.add_argument("--share", type=float, default=0.5, help="of every batch, from the renders")
    ap.add_argument("--init", choices=["default", "scratch"], default="default")
    ap.add_argument("--epochs", type=int, help="default: 3 fine-tuning, 16 from scratch")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="stroke.safetensors")
    ap.add_argument("--limit", type=int, default=0,
                    help="train on only N training-split digits: a quick check that the "
                         "script runs, not a measurement")  # fmt: skip
    args = ap.parse_args()
    if not 0 < args.share < 1:
        ap.error("--share is the renders' part of a batch, between 0 and 1")
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be at least 1")
    if not Path(args.out).resolve().parent.is_dir():  # found now, not after the training
        ap.error(f"--out {args.out}: no directory {Path(args.out).parent} to save it in")

    ds = load_dataset("mnist")
    train_idx, val_idx = split_indices(len(ds.train_images), 5000, seed=0)
    if not 0 < args.n <= len(train_idx) or not 0 < args.val_n <= len(val_idx):
        ap.error(f"--n is 1 to {len(train_idx)} (the training split), --val-n 1 to "
                 f"{len(val_idx)} (the validation split)")  # fmt: skip
    rng = np.random.default_rng(1234)
    pick = rng.choice(np.asarray(train_idx), args.n, replace=False)
    kinds = rng.integers(0, len(KINDS), args.n)
    val_pick = rng.choice(np.asarray(val_idx), args.val_n, replace=False)
    val_kinds = rng.integers(0, len(KINDS), args.val_n)
    t0 = time.perf_counter()
    xr, yr = render_all(ds.train_images[pick].numpy(), kinds, 99), ds.train_labels[pick]
    xrv = render_all(ds.train_images[val_pick].numpy(), val_kinds, 98)
    val_renders = (xrv, ds.train_labels[val_pick], val_kinds)
    print(f"rendered {args.n} training and {args.val_n} validation digits through the "
          f"pipeline in {time.perf_counter() - t0:.0f} s")  # fmt: skip

    device = resolve_device("auto")
    train_idx = train_idx[: args.limit or len(train_idx)]
    x, y = to_float(ds.train_images[train_idx]).to(device), ds.train_labels[train_idx].to(device)
    xv, yv = to_float(ds.train_images[val_idx]), ds.train_labels[val_idx]
    shipped, meta = load_model(resolve_checkpoint("default"))
    print(f"shipped model: {scores(shipped, xv, yv, *val_renders)}")
    torch.manual_seed(args.seed)
    if args.init == "scratch":
        cfg = make_config("best", None, {"epochs": args.epochs or 16, "seed": args.seed})
        model = build_model("best", 10, meta["normalization"]["mean"], meta["normalization"]["std"])
    else:  # the shipped model's second step: digitrec train --init base --lr 1e-3 ...
        step = {"lr": 1e-3, "rotate": 15, "elastic": 0.3, "strays": 0.1, "outline": 0.1}
        cfg = make_config("best", None, {**step, "epochs": args.epochs or 3, "seed": args.seed})
        model = shipped
    model = model.to(device, memory_format=torch.channels_last)

    bs = cfg.batch_size
    extra = round(bs * args.share / (1 - args.share))
    steps = (len(x) + bs - 1) // bs
    stepper = Stepper(cfg, model, steps, device)  # the recipe's step, as `digitrec train` runs it
    for epoch in range(cfg.epochs):
        model.train()
        t0, perm = time.perf_counter(), torch.randperm(len(x), generator=stepper.gen)
        for b in range(steps):
            # Each batch: training digits plus a share of renders, augmented together.
            idx = perm[b * bs : (b + 1) * bs]
            more = torch.randint(len(xr), (extra,), generator=stepper.gen)
            xb = torch.cat([x[idx], xr[more].to(device)])
            yb = torch.cat([y[idx], yr[more].to(device)])
            stepper.step(xb, yb, epoch * steps + b)
        seconds = time.perf_counter() - t0
        print(f"epoch {epoch + 1}/{cfg.epochs} ({seconds:.0f} s): "
              f"{scores(model, xv, yv, *val_renders)}", flush=True)  # fmt: skip

    command = "python benchmarks/stroke_training.py " + " ".join(sys.argv[1:])
    record = model_record(meta["model"], meta["dataset"], meta["classes"], meta["normalization"],
                          meta["params"], Path(args.out).stem, "best", epoch=cfg.epochs,
                          seed=args.seed, command=command)  # fmt: skip
    save_model(args.out, model, record)
    print(f"saved {args.out}: python benchmarks/robustness.py --split val --model-path {args.out}")


if __name__ == "__main__":
    main()
