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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

import digitrec
from digitrec import calibration, plots
from digitrec.augment import Augment, augment_batch
from digitrec.checkpoint import (
    copy_with_meta,
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
from digitrec.records import now
from digitrec.runs import (
    locked,
    model_record,
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
                   pen=cfg.pen, styles=cfg.styles)  # fmt: skip


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
    average does not; a one-cycle schedule anneals that noise away by the end, so only
    the recipes judged mid-run use it (docs/results.md#measured).
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

    Worth it only where the hardware computes bfloat16 itself; elsewhere the format is
    emulated and loses time (docs/results.md#measured).
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


@dataclass
class Progress:
    """Where a run stands, besides its weights and random states: what a resume restores."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    epoch: int = 0  # epochs done
    batch: int = 0  # batches done in the epoch under way
    perm: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    # This epoch's loss sum, correct answers, images seen and seconds so far.
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0, 0.0])

    def epochs_since_best(self) -> int:
        accs = [r["val_acc"] for r in self.history if r["val_acc"] is not None]
        return len(accs) - 1 - accs.index(max(accs)) if accs else 0

    def state(self) -> dict[str, Any]:
        keys = ("history", "best_acc", "epoch", "batch", "perm", "sums")
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def restored(cls, st: dict[str, Any], device: torch.device) -> Progress:
        return cls(st["history"], st["best_acc"], st["epoch"], st["batch"],
                   st["perm"].to(device), st["sums"])  # fmt: skip


class Stepper:
    """A recipe's optimisation step: augmentation, bfloat16 autocast, loss, backward, the
    optimizer and its per-batch schedule, the weight average. `train` runs it over the
    training split; a benchmark that assembles its own batches runs the same step."""

    def __init__(
        self, cfg: TrainConfig, model: nn.Module, steps: int, device: torch.device
    ) -> None:
        self.cfg, self.model, self.device = cfg, model, device
        self.average = WeightAverage(model, cfg.ema) if cfg.ema else None
        # What is validated, saved and handed to callbacks: the model, or its average.
        self.scored = self.average.model if self.average is not None else model
        self.opt = make_optimizer(cfg, model)
        self.sched, self.per_batch = make_scheduler(cfg, self.opt, steps)
        self.aug = augmentation(cfg) if cfg.augment else None
        self.gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.amp = use_bfloat16(cfg.precision, device)

    def step(self, x: Tensor, y: Tensor, done: int) -> tuple[Tensor, Tensor]:
        """One optimizer step on a batch; ``done``: the steps taken before it (the
        average's warm-up). Returns the loss and the logits."""
        if self.aug is not None:
            x = augment_batch(x, self.aug, self.gen, y)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(x.contiguous(memory_format=torch.channels_last))
            loss = self.criterion(out.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.per_batch:
            self.sched.step()
        if self.average is not None:
            self.average.update(done)
        return loss, out

    def end_epoch(self, val_loss: float | None) -> None:
        if self.sched is not None and not self.per_batch:
            self.sched.step(val_loss) if self.cfg.schedule == "plateau" else self.sched.step()

    def state(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "model": self.model.state_dict(),
            "average": self.average.model.state_dict() if self.average is not None else None,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if cuda else None,
        }

    def restore(self, st: dict[str, Any], where: str) -> None:
        load_state(self.model, st["model"], where)
        if self.average is not None:
            load_state(self.average.model, st["average"], where)
        self.opt.load_state_dict(st["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(st["scheduler"])
        self.gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        if self.device.type == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(st["cuda_rng"])


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
    split = Split.of(cfg, data, device)
    steps = (len(split.x_train) + cfg.batch_size - 1) // cfg.batch_size
    stepper = Stepper(cfg, model, steps, device)
    meta = model_record(cfg.model, spec.name, list(spec.classes),
                        {"mean": spec.mean, "std": spec.std}, count_parameters(model),
                        run_dir.name, cfg.recipe)  # fmt: skip
    state_path = run_dir / "state.safetensors"
    at = Progress()
    config = {**run_config(cfg, data, run_dir, meta["params"], device), "init": init}
    if resume:
        st = load_tree(state_path)
        stepper.restore(st, str(state_path))
        at = Progress.restored(st, device)
        config = {**read_config(run_dir), "status": "running"}
        log(f"resuming {run_dir} at epoch {at.epoch + 1}, batch {at.batch}")
        if at.epoch >= cfg.epochs or 0 < cfg.early_stop <= at.epochs_since_best():
            log("every epoch was done (killed while finishing): writing the run's last records")
            at.epoch = cfg.epochs

    def snapshot() -> None:
        save_tree(state_path, {**stepper.state(), **at.state()})

    def interrupted() -> Interrupted:
        config["status"] = "interrupted"
        write_config(run_dir, config)
        return Interrupted(run_dir, at.epoch, at.batch)

    with stop_on_sigint(stop):
        write_config(run_dir, config)
        if not resume:
            snapshot()  # from the first moment, a kill leaves a run that resumes
        for epoch in range(at.epoch, cfg.epochs):
            if not run_epoch(stepper, at, split, stop, callback, progress):
                snapshot()
                raise interrupted()
            record_epoch(stepper, at, split, run_dir, meta, log)
            snapshot()  # last: a kill before it redoes this epoch, writing the same files
            if cfg.early_stop and at.epochs_since_best() >= cfg.early_stop:
                log(f"early stop: no better validation accuracy for {cfg.early_stop} epochs")
                break
            if stop.is_set() and epoch + 1 < cfg.epochs:  # asked during the last batch
                raise interrupted()

    if split.validated:
        config["calibration"] = calibrate_best(run_dir / "best.safetensors", split, log)
    config["status"] = "complete"
    config["best_val_acc"] = at.best_acc if split.validated else None
    config["train_seconds"] = sum(r["seconds"] for r in at.history)
    write_config(run_dir, config)
    return TrainResult(run_dir, at.history, config["best_val_acc"], config["train_seconds"])


def calibrate_best(path: Path, split: Split, log: Callable[[str], None]) -> dict[str, Any]:
    """The run's model calibrated on its validation split (``digitrec.calibration``): the
    record stored in its checkpoint, written again with the same weights."""
    model, _ = load_model(path)
    record = calibration.fit(batched_logits(model, split.x_val), split.y_val)
    copy_with_meta(path, path, {"calibration": record})
    v = record["val"]
    log(
        f"calibrated: temperature {record['temperature']:.3f} (validation ECE "
        f"{v['ece_before']:.4f} -> {v['ece_after']:.4f}), 'not sure' below "
        f"{record['uncertain_below']:.3f} ({v['coverage']:.1%} answered, {v['risk']:.2%} wrong)"
    )
    return record


@dataclass
class Split:
    """The seeded split, as float tensors: training on the device, validation beside."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @property
    def validated(self) -> bool:
        # --val-size 0: a final fit on every training image once a recipe is chosen. Nothing
        # is selected then: each epoch's weights are the run's best, the last ones its result.
        return len(self.y_val) > 0

    @classmethod
    def of(cls, cfg: TrainConfig, data: Dataset, device: torch.device) -> Split:
        train_idx, val_idx = split_indices(len(data.train_images), cfg.val_size, cfg.split_seed)
        if cfg.limit:
            train_idx = train_idx[: cfg.limit]
        return cls(
            to_float(data.train_images[train_idx]).to(device),
            data.train_labels[train_idx].to(device),
            to_float(data.train_images[val_idx]),
            data.train_labels[val_idx],
        )


def run_epoch(
    s: Stepper,
    at: Progress,
    split: Split,
    stop: threading.Event,
    callback: Callable[[nn.Module, float], bool] | None,
    progress: bool,
) -> bool:
    """The batches left in epoch ``at.epoch``; False if asked to stop before its end
    (``at`` then says where)."""
    n, bs = len(split.x_train), s.cfg.batch_size
    steps = (n + bs - 1) // bs
    s.model.train()
    if at.batch == 0:
        at.perm, at.sums = torch.randperm(n, generator=s.gen).to(s.device), [0.0, 0.0, 0, 0.0]
    t0 = time.perf_counter()
    bar = tqdm(
        range(at.batch, steps),
        initial=at.batch,
        total=steps,
        leave=False,
        desc=f"epoch {at.epoch + 1}/{s.cfg.epochs}",
        unit="batch",
        mininterval=0.5,
        disable=None if progress else True,  # None: only on a terminal
    )
    for b in bar:
        idx = at.perm[b * bs : (b + 1) * bs]
        y = split.y_train[idx]
        loss, out = s.step(split.x_train[idx], y, at.epoch * steps + b)
        at.sums[0] += loss.item() * len(y)
        at.sums[1] += (out.argmax(1) == y).sum().item()
        at.sums[2] += len(y)
        if b % 20 == 0:
            bar.set_postfix(
                loss=f"{at.sums[0] / at.sums[2]:.4f}", acc=f"{at.sums[1] / at.sums[2]:.4f}"
            )
        if callback is not None:
            done = callback(s.scored, at.epoch + (b + 1) / steps)
            s.model.train()  # whatever the callback did with it
            if done:
                stop.set()
        if stop.is_set() and b + 1 < steps:
            bar.close()
            at.sums[3] += time.perf_counter() - t0
            at.batch = b + 1
            return False
    bar.close()
    at.sums[3] += time.perf_counter() - t0
    at.batch = 0
    return True


def record_epoch(
    s: Stepper,
    at: Progress,
    split: Split,
    run_dir: Path,
    meta: dict[str, Any],
    log: Callable[[str], None],
) -> None:
    """Validate the epoch just trained, log it, and write its files: best (when validation
    improved, or always without validation), last, metrics.csv, curves.png."""
    val_loss = val_acc = None
    if split.validated:
        val_logits = batched_logits(s.scored, split.x_val)
        val_loss = F.cross_entropy(val_logits, split.y_val).item()
        val_acc = (val_logits.argmax(1) == split.y_val).float().mean().item()
    row = {
        "epoch": at.epoch + 1,
        "train_loss": at.sums[0] / at.sums[2],
        "train_acc": at.sums[1] / at.sums[2],
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": s.opt.param_groups[0]["lr"],
        "seconds": at.sums[3],
    }
    at.history.append(row)
    s.end_epoch(val_loss)
    val = f"val loss {val_loss:.4f} acc {val_acc:.4f}" if split.validated else "no validation"
    log(
        f"epoch {at.epoch + 1:>3}/{s.cfg.epochs}  train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:.4f}  {val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s"
    )
    epoch_meta = {**meta, "epoch": at.epoch + 1, "metrics": row, "created": now()}
    if val_acc is None or val_acc > at.best_acc:  # without validation, every epoch
        at.best_acc = at.best_acc if val_acc is None else val_acc
        save_model(run_dir / "best.safetensors", s.scored, epoch_meta)
    save_model(run_dir / "last.safetensors", s.scored, epoch_meta)
    write_metrics(run_dir, at.history)
    plots.training_curves(at.history, run_dir / "curves.png")
    at.epoch += 1
