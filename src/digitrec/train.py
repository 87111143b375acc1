"""The training loop: one screen of it, plus the bookkeeping that makes a run safe.

The dataset sits on the device as one float tensor; each epoch is a seeded
permutation sliced into batches, augmented on the device. After every epoch the
model is scored on the validation split, and the run directory gets
``metrics.csv``, ``curves.png``, ``last.safetensors``, ``best.safetensors`` (when
validation accuracy improved) and ``state.safetensors``, everything a resume
needs: optimizer, scheduler, RNG states and the position inside the epoch.
Ctrl-C finishes the current batch, saves that state and stops.
"""

from __future__ import annotations

import contextlib
import copy
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import digitrec
from digitrec import plots
from digitrec.augment import Augment, augment_batch
from digitrec.checkpoint import (
    load_model,
    load_state,
    load_tree,
    read_meta,
    save_model,
    save_tree,
)
from digitrec.data import Dataset, split_indices, to_float
from digitrec.errors import CheckpointError, DigitrecError, Interrupted
from digitrec.models import batched_logits, build_model, count_parameters, resolve_device
from digitrec.recipes import TrainConfig
from digitrec.runs import (
    locked,
    now,
    read_config,
    refuse_existing,
    remove_stale_temporaries,
    resolve_checkpoint,
    write_config,
    write_metrics,
)


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_val_acc: float | None  # None: trained on every image (--val-size 0)
    train_seconds: float


def augmentation(cfg: TrainConfig) -> Augment:
    return Augment(rotate=cfg.rotate, elastic=cfg.elastic, strays=cfg.strays, outline=cfg.outline,
                   pen=cfg.pen)  # fmt: skip


def init_checkpoint(cfg: TrainConfig, classes: list[str]) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``cfg.init`` names and its metadata, refused unless it can start this run.

    Fine-tuning changes what a model has learned, not what it is: the checkpoint must
    hold the same architecture, trained on the same classes.
    """
    path = resolve_checkpoint(cfg.init)
    meta = read_meta(path)
    if meta.get("model") != cfg.model:
        raise CheckpointError(
            f"--init {cfg.init}: {path} holds a {meta.get('model')!r} model and this run trains "
            f"{cfg.model!r}; pass --model {meta.get('model')} (or --init a {cfg.model} checkpoint)"
        )
    if list(meta.get("classes", [])) != classes:
        raise CheckpointError(
            f"--init {cfg.init}: {path} was trained on classes {meta.get('classes')}, this "
            f"dataset has {classes}; pass the --dataset it was trained on"
        )
    return path, meta


def initial_weights(cfg: TrainConfig, model: nn.Module, classes: list[str]) -> dict[str, Any]:
    """Load ``cfg.init``'s weights into ``model``; return where they came from, for config.json."""
    path, meta = init_checkpoint(cfg, classes)
    model.load_state_dict(load_model(path)[0].state_dict())
    keys = ("run", "epoch", "command", "recipe", "test_accuracy")
    return {"path": str(path), **{k: meta[k] for k in keys if k in meta}}


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params, wd = model.parameters(), cfg.weight_decay
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=wd)
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=wd)


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """The scheduler, and whether it steps per batch (else per epoch)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle" and total >= 8:  # shorter runs keep a constant rate
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total, pct_start=0.25
        ), True
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), True
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.3, patience=2), False
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7), False
    return None, False


class WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics.

    Mid-run, the last step's weights carry the noise of the last batches and their
    average does not: on validation `best` reached 99.62% by epoch 6 of 16 with it,
    epoch 13 without. A one-cycle schedule anneals that noise away by the end, where
    the two measured level, so no recipe uses it; the 99.5% speed race does.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model, self.decay = copy.deepcopy(model), decay
        own, live = self.model.state_dict().values(), model.state_dict().values()
        self.pairs = list(zip(own, live, strict=True))  # live ones change in place

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the live weights after optimizer step ``step`` (counted from 0).

        The decay ramps up over the first steps, so the average does not remember the
        random initial weights for long.
        """
        d = min(self.decay, (1 + step) / (10 + step))
        for a, m in self.pairs:
            a.lerp_(m, 1 - d) if a.is_floating_point() else a.copy_(m)  # copy: a BN counter


def use_bfloat16(precision: str, device: torch.device) -> bool:
    """Whether to train in bfloat16 autocast: mixed precision that needs no loss scaling.

    Worth it only where the hardware computes bfloat16 itself: `best` takes 45 ms a
    step of 128 instead of 80 on an AVX512-BF16 CPU, while a CPU without it would
    emulate the format and lose time.
    """
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return False


@contextlib.contextmanager
def stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C asks the loop to stop after the current batch; a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(
            "\nStopping after this batch to save a resumable state (Ctrl-C again to abort)...",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_config(cfg: TrainConfig, data: Dataset, run_dir: Path, params: int, device) -> dict:
    """Everything needed to know how a run was made: settings, versions, data checksums."""
    return {
        "run": run_dir.name,
        "created": now(),
        "command": " ".join(["digitrec", *sys.argv[1:]]) if sys.argv else "",
        "settings": cfg.to_dict(),
        "augment": augmentation(cfg).to_dict() if cfg.augment else None,
        "device": str(device),
        "autocast": "bfloat16" if use_bfloat16(cfg.precision, device) else None,
        "params": params,
        "versions": {
            "digitrec": digitrec.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "data": {"dataset": data.spec.name, "files": data.files},
        "status": "running",
    }


def train(
    cfg: TrainConfig,
    data: Dataset,
    run_dir: Path,
    resume: bool = False,
    stop: threading.Event | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    callback: Callable[[nn.Module, float], bool] | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``data`` into ``run_dir``, or continue the run there (``resume``).

    ``callback(model, epochs_done)`` runs after every batch (benchmarks measure the time
    to an accuracy with it); returning True stops the run as Ctrl-C does.

    The run directory is this process's alone while it trains (a second one is refused),
    and any kill leaves a run that ``resume`` finishes: the resumable state is written
    before the first epoch and last in each, so the files of an epoch whose state was
    not saved are written again, identically, by the resumed run.
    """
    with locked(run_dir):
        if not resume:
            refuse_existing(run_dir)
        elif read_config(run_dir).get("status") == "complete":
            raise DigitrecError(f"{run_dir} already finished: nothing to resume")
        elif not (run_dir / "state.safetensors").is_file():
            log(f"{run_dir} has no resumable state yet (killed while starting): starting it over")
            resume = False
        removed = remove_stale_temporaries(run_dir)
        if removed:
            log(f"removed {len(removed)} half-written file(s) a killed run left")
        return _train(cfg, data, run_dir, resume, stop, log, progress, callback)


def _train(
    cfg: TrainConfig,
    data: Dataset,
    run_dir: Path,
    resume: bool,
    stop: threading.Event | None,
    log: Callable[[str], None],
    progress: bool,
    callback: Callable[[nn.Module, float], bool] | None,
) -> TrainResult:
    stop = stop or threading.Event()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    spec = data.spec
    model = build_model(cfg.model, data.num_classes, spec.mean, spec.std)
    init = initial_weights(cfg, model, list(spec.classes)) if cfg.init and not resume else None
    model = model.to(device, memory_format=torch.channels_last)

    # Data: the seeded split, as float tensors on the device, once.
    train_idx, val_idx = split_indices(len(data.train_images), cfg.val_size, cfg.split_seed)
    if cfg.limit:
        train_idx = train_idx[: cfg.limit]
    x_train = to_float(data.train_images[train_idx]).to(device)
    y_train = data.train_labels[train_idx].to(device)
    x_val, y_val = to_float(data.train_images[val_idx]), data.train_labels[val_idx]
    # --val-size 0: a final fit on every training image once a recipe is chosen. Nothing
    # is selected then: each epoch's weights are the run's best, the last ones its result.
    validated = len(val_idx) > 0
    n, bs = len(x_train), cfg.batch_size
    steps = (n + bs - 1) // bs

    # What is validated, saved and handed to the callback: the model, or its average.
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    scored = average.model if average is not None else model
    opt = make_optimizer(cfg, model)
    sched, per_batch = make_scheduler(cfg, opt, steps)
    aug = augmentation(cfg) if cfg.augment else None
    gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation
    meta = {
        "model": cfg.model,
        "dataset": spec.name,
        "classes": list(spec.classes),
        "normalization": {"mean": spec.mean, "std": spec.std},
        "input": [1, 28, 28],
        "params": count_parameters(model),
        "run": run_dir.name,
        "recipe": cfg.recipe,
    }

    history: list[dict[str, float]] = []
    best_acc, start_epoch, start_batch = -1.0, 0, 0
    perm = torch.empty(0, dtype=torch.long)
    sums = [0.0, 0.0, 0, 0.0]  # loss sum, correct, seen, seconds so far this epoch
    config = {**run_config(cfg, data, run_dir, meta["params"], device), "init": init}
    if resume:
        st = load_tree(run_dir / "state.safetensors")
        load_state(model, st["model"], f"{run_dir}/state.safetensors")
        if average is not None:
            load_state(average.model, st["average"], f"{run_dir}/state.safetensors")
        opt.load_state_dict(st["optimizer"])
        if sched is not None:
            sched.load_state_dict(st["scheduler"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        if device.type == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(st["cuda_rng"])
        history, best_acc = st["history"], st["best_acc"]
        start_epoch, start_batch, sums = st["epoch"], st["batch"], st["sums"]
        perm = st["perm"].to(device)
        config = {**read_config(run_dir), "status": "running"}
        log(f"resuming {run_dir} at epoch {start_epoch + 1}, batch {start_batch}")

    def save_state(epoch: int, batch: int) -> None:
        save_tree(
            run_dir / "state.safetensors",
            {
                "model": model.state_dict(),
                "average": average.model.state_dict() if average is not None else None,
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "history": history,
                "best_acc": best_acc,
                "epoch": epoch,
                "batch": batch,
                "perm": perm,
                "sums": sums,
            },
        )

    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    amp = use_bfloat16(cfg.precision, device)
    accs = [r["val_acc"] for r in history if r["val_acc"] is not None]
    epochs_since_best = len(accs) - 1 - accs.index(max(accs)) if accs else 0
    if resume and (start_epoch >= cfg.epochs or 0 < cfg.early_stop <= epochs_since_best):
        log("every epoch was done (killed while finishing): writing the run's last records")
        start_epoch = cfg.epochs
    with stop_on_sigint(stop):
        write_config(run_dir, config)
        if not resume:
            save_state(0, 0)  # from the first moment, a kill leaves a run that resumes
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            if start_batch == 0:
                perm, sums = torch.randperm(n, generator=gen).to(device), [0.0, 0.0, 0, 0.0]
            t0 = time.perf_counter()
            bar = tqdm(
                range(start_batch, steps),
                initial=start_batch,
                total=steps,
                leave=False,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="batch",
                mininterval=0.5,
                disable=None if progress else True,  # None: only on a terminal
            )
            for b in bar:
                idx = perm[b * bs : (b + 1) * bs]
                x, y = x_train[idx], y_train[idx]
                if aug is not None:
                    x = augment_batch(x, aug, gen)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = model(x.contiguous(memory_format=torch.channels_last))
                    loss = criterion(out.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if per_batch:
                    sched.step()
                if average is not None:
                    average.update(epoch * steps + b)
                sums[0] += loss.item() * len(y)
                sums[1] += (out.argmax(1) == y).sum().item()
                sums[2] += len(y)
                if b % 20 == 0:
                    bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{sums[1] / sums[2]:.4f}")
                if callback is not None:
                    done = callback(scored, epoch + (b + 1) / steps)
                    model.train()  # whatever the callback did with it
                    if done:
                        stop.set()
                if stop.is_set() and b + 1 < steps:
                    bar.close()
                    sums[3] += time.perf_counter() - t0
                    save_state(epoch, b + 1)
                    config["status"] = "interrupted"
                    write_config(run_dir, config)
                    raise Interrupted(run_dir, epoch, b + 1)
            bar.close()
            seconds = sums[3] + time.perf_counter() - t0
            start_batch = 0

            val_loss = val_acc = None
            if validated:
                val_logits = batched_logits(scored, x_val)
                val_loss = F.cross_entropy(val_logits, y_val).item()
                val_acc = (val_logits.argmax(1) == y_val).float().mean().item()
            row = {
                "epoch": epoch + 1,
                "train_loss": sums[0] / sums[2],
                "train_acc": sums[1] / sums[2],
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": opt.param_groups[0]["lr"],
                "seconds": seconds,
            }
            history.append(row)
            if sched is not None and not per_batch:
                sched.step(val_loss) if cfg.schedule == "plateau" else sched.step()
            val = f"val loss {val_loss:.4f} acc {val_acc:.4f}" if validated else "no validation"
            log(
                f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.4f}  {val}  lr {row['lr']:.2e}  {seconds:.1f}s"
            )

            epoch_meta = {
                **meta,
                "epoch": epoch + 1,
                "metrics": row,
                "created": now(),
            }
            if val_acc is None or val_acc > best_acc:  # without validation, every epoch
                best_acc = best_acc if val_acc is None else val_acc
                epochs_since_best = 0
                save_model(run_dir / "best.safetensors", scored, epoch_meta)
            else:
                epochs_since_best += 1
            save_model(run_dir / "last.safetensors", scored, epoch_meta)
            write_metrics(run_dir, history)
            plots.training_curves(history, run_dir / "curves.png")
            save_state(epoch + 1, 0)
            if cfg.early_stop and epochs_since_best >= cfg.early_stop:
                log(f"early stop: no better validation accuracy for {cfg.early_stop} epochs")
                break
            if stop.is_set() and epoch + 1 < cfg.epochs:  # asked during the last batch
                config["status"] = "interrupted"
                write_config(run_dir, config)
                raise Interrupted(run_dir, epoch + 1, 0)

    config["status"] = "complete"
    config["best_val_acc"] = best_acc if validated else None
    config["train_seconds"] = sum(r["seconds"] for r in history)
    write_config(run_dir, config)
    return TrainResult(run_dir, history, config["best_val_acc"], config["train_seconds"])
