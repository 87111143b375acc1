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
DISTILL_T = 2.0  # softened answers carry what the teacher thinks of the other digits


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
    frozen_norm: bool = False,
    each_pass: Callable[[int, float, float], None] | None = None,
    teacher: nn.Module | None = None,
    distill: float = 1.0,
) -> float:
    """Train ``model`` on ``x`` (N, ...) and labels ``y`` for ``epochs`` passes; each batch
    of ``x`` goes through ``make_batch`` with the loop's generator (seeded: the same
    batches for a seed). ``warmup``: the share of steps the rate rises. ``frozen_norm``:
    batch norms keep their statistics (fine-tuning on a few examples). ``each_pass``:
    called after every pass with its number, mean loss and accuracy. ``teacher``: where
    it reads an example right, the model is also held to its answer, with weight
    ``distill`` (distillation: what it knew is kept while the rest is learnt). Returns
    seconds."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    steps = max(1, int(epochs * len(x) / batch))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=warmup)
    _train_mode(model, frozen_norm)
    t0, step, passes = time.perf_counter(), 0, 0
    while step < steps:
        loss_sum, right, seen = 0.0, 0, 0
        for idx in torch.randperm(len(x), generator=g).split(batch):
            if step == steps:
                break
            xb = make_batch(x[idx], g).to(device)
            out = model(xb)
            target = y[idx].to(device)
            loss = F.cross_entropy(out, target, label_smoothing=label_smoothing)
            if teacher is not None:
                loss = loss + distill * _kept(out, teacher, xb, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            right += int((out.argmax(1) == target).sum())
            seen += len(idx)
            if step % 200 == 0 or step == steps:
                log(f"step {step}/{steps}  loss {loss.item():.3f}  "
                    f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        passes += 1
        if each_pass is not None and seen:
            model.eval()
            each_pass(passes, loss_sum / seen, right / seen)
            _train_mode(model, frozen_norm)
    model.eval()
    return time.perf_counter() - t0


def _train_mode(model: nn.Module, frozen_norm: bool) -> None:
    model.train()
    for m in model.modules():
        if frozen_norm and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _kept(out: torch.Tensor, teacher: nn.Module, xb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Distillation at temperature ``DISTILL_T`` towards ``teacher``'s answers, on the
    examples it reads right."""
    with torch.no_grad():
        t = teacher(xb)
    right = t.argmax(1) == y
    if not right.any():
        return out.sum() * 0
    p = F.log_softmax(out[right] / DISTILL_T, 1)
    q = F.softmax(t[right] / DISTILL_T, 1)
    return F.kl_div(p, q, reduction="batchmean") * DISTILL_T**2 * right.float().mean()
