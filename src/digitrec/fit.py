"""The short training loop the companion models share (the reading model, the "not a
digit" detector): a few passes of AdamW with a one-cycle rate over examples held in
memory, each batch made ready by the caller (scaled, moved, augmented). The digit models'
own loop, with its runs, resuming and evaluation, is ``digitrec.train``."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Batch = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def fit_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    make_batch: Batch,
    epochs: float,
    seed: int,
    batch: int,
    lr: float,
    warmup: float,
    label_smoothing: float = 0.0,
    log: Callable[[str], None] = print,
) -> float:
    """Train ``model`` on ``x`` (N, ...) and labels ``y`` for ``epochs`` passes; each batch
    of ``x`` goes through ``make_batch`` with the loop's generator (seeded: the same
    batches for a seed). ``warmup``: the share of steps the rate rises. Returns seconds."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    steps = max(1, int(epochs * len(x) / batch))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=warmup)
    model.train()
    t0, step = time.perf_counter(), 0
    while step < steps:
        for idx in torch.randperm(len(x), generator=g).split(batch):
            if step == steps:
                break
            out = model(make_batch(x[idx], g).to(device))
            loss = F.cross_entropy(out, y[idx].to(device), label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 200 == 0 or step == steps:
                log(f"step {step}/{steps}  loss {loss.item():.3f}  "
                    f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    model.eval()
    return time.perf_counter() - t0
