"""``digitrec learn``: the model in use fine-tuned on the corrections users made, and
promoted to the registry only if it passes the gate.

The corrections (one in ``HOLD_OUT``, chosen by its content hash, held out: never
trained on, so the share stays fixed as records arrive) are mixed with a class-balanced
replay sample of the training split (rehearsal: what MNIST taught is rehearsed while the
corrections are learnt), a few passes at a low rate with the batch norms' statistics
kept, and held to the old model's answers where those were right (distillation). The
candidate is written as a run (config.json, metrics.csv, curves.png,
best.safetensors, calibrated again on validation) under ``digitrec_home()/learn/``, not
the runs directory, so a refused candidate never becomes "the best run". The gate
compares it with the model it would replace, on the validation split, the held-out
corrections and the canaries (``digitrec.canaries``).
"""

from __future__ import annotations

import copy
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from digitrec import registry
from digitrec.augment import Augment, augment_batch
from digitrec.calibration import fit as calibrate
from digitrec.calibration import validation_split
from digitrec.canaries import PER_CANARY, canaries
from digitrec.checkpoint import load_model, save_model
from digitrec.data import get_spec, load_dataset, split_indices, to_float
from digitrec.errors import DigitrecError
from digitrec.feedback import Correction, FeedbackStore
from digitrec.fit import fit_classifier
from digitrec.home import digitrec_home
from digitrec.models import batched_logits, count_parameters, resolve_device
from digitrec.plots import training_curves
from digitrec.records import now
from digitrec.runs import (
    companions,
    model_record,
    new_run_dir,
    resolve_model_path,
    write_config,
    write_metrics,
)

HOLD_OUT = 5  # one correction in five is held out
MIN_TRAIN = 5  # corrections to train on, at least
REPLAY_PER_CLASS = 500
CORRECTION_SHARE = 0.1  # of every pass's examples: the corrections, repeated
EPOCHS, LR, BATCH = 4, 1e-4, 64
DISTILL = 3.0  # the weight of keeping the old model's right answers (fit_classifier)
ALPHAS = (1.0, 0.8, 0.6, 0.4)  # how far towards the fine-tuned weights, the farthest first
MAX_VAL_DROP = 0.001  # the gate: validation accuracy may fall by 0.1 point at most,
MAX_CANARY_DROP = 0.005  # ... a canary's by 0.5 point
# The shipped model's own augmentation (its record's command): the outlines, strays and
# warps it learnt are rehearsed too (without them the outline canary fell 2 points).
AUGMENT = Augment(rotate=15, elastic=0.3, strays=0.1, outline=0.1)


KEEP_CANDIDATES = 5  # the newest candidates kept in learn/ (2.3 MB each); a promoted one is
# copied into the registry, so pruning it loses nothing


def learn_root() -> Path:
    return digitrec_home() / "learn"


def prune_candidates(root: Path, keep: int = KEEP_CANDIDATES) -> list[Path]:
    """Delete all but the ``keep`` newest candidate runs under ``root`` (named by the time
    they were made); returns the deleted ones."""
    runs = (
        sorted(d for d in root.iterdir() if (d / "config.json").is_file()) if root.is_dir() else []
    )
    old = runs[: max(0, len(runs) - keep)]
    for d in old:
        shutil.rmtree(d, ignore_errors=True)
    return old


def is_held_out(record: Correction) -> bool:
    return int(record.content_hash[:8], 16) % HOLD_OUT == 0


@dataclass
class Scores:
    validation: float
    validation_n: int
    held_out: int  # right, of
    held_out_n: int
    canaries: dict[str, float] = field(default_factory=dict)

    @property
    def held_out_acc(self) -> float | None:
        return self.held_out / self.held_out_n if self.held_out_n else None


@dataclass
class Outcome:
    run: Path
    before: Scores
    after: Scores
    refused: list[str]  # the gate's reasons; empty: passed
    alpha: float  # how far towards the fine-tuned weights the candidate went
    promoted: registry.Version | None
    trained_on: int
    replay: int
    seconds: float


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, torch.Tensor]:
    logits = batched_logits(model, x)
    return int((logits.argmax(1) == y).sum()), logits


def score(model: nn.Module, val: tuple, held: tuple, checks: dict[str, tuple]) -> Scores:
    right, _ = _accuracy(model, *val)
    held_right = _accuracy(model, *held)[0] if len(held[1]) else 0
    canary = {k: _accuracy(model, *v)[0] / len(v[1]) for k, v in checks.items()}
    return Scores(right / len(val[1]), len(val[1]), held_right, len(held[1]), canary)


def gate(before: Scores, after: Scores) -> list[str]:
    """Why the candidate may not replace the model (nothing: it may)."""
    if not after.held_out_n:
        learnt = [f"no correction is held out yet to show an improvement (one in {HOLD_OUT} "
                  "is, by its hash): collect more"]  # fmt: skip
    elif after.held_out <= before.held_out:
        learnt = [f"the held-out corrections did not improve ({before.held_out} of "
                  f"{before.held_out_n} right before, {after.held_out} after)"]  # fmt: skip
    else:
        learnt = []
    return learnt + forgot(before, after)


def forgot(before: Scores, after: Scores) -> list[str]:
    """What the candidate reads worse than the model: validation by more than
    ``MAX_VAL_DROP``, a canary by more than ``MAX_CANARY_DROP``."""
    reasons = []
    if (drop := before.validation - after.validation) > MAX_VAL_DROP:
        reasons.append(f"validation accuracy fell {100 * drop:.2f} points "
                       f"(at most {100 * MAX_VAL_DROP:.1f})")  # fmt: skip
    for name, was in before.canaries.items():
        if (drop := was - after.canaries[name]) > MAX_CANARY_DROP:
            reasons.append(f"the {name} canary fell {100 * drop:.2f} points "
                           f"(at most {100 * MAX_CANARY_DROP:.1f})")  # fmt: skip
    return reasons


def _stack(records: Sequence[Correction]) -> tuple[torch.Tensor, torch.Tensor]:
    x = (
        torch.from_numpy(np.stack([r.image for r in records]))
        if records
        else torch.empty(0, 28, 28)
    )
    return x.unsqueeze(1).float(), torch.tensor([r.label for r in records], dtype=torch.long)


def training_mix(
    records: Sequence[Correction],
    images: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    per_class: int = REPLAY_PER_CLASS,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The corrections, repeated to ``CORRECTION_SHARE`` of the whole, and ``per_class``
    training images of each digit. Returns x, y, the replay's size."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for d in range(10):
        of_d = (labels == d).nonzero()[:, 0]
        picks.append(of_d[torch.randperm(len(of_d), generator=g)[:per_class]])
    replay = torch.cat(picks)
    cx, cy = _stack(records)
    reps = max(1, round(CORRECTION_SHARE / (1 - CORRECTION_SHARE) * len(replay) / len(records)))
    x = torch.cat([to_float(images[replay]), cx.repeat(reps, 1, 1, 1)])
    y = torch.cat([labels[replay], cy.repeat(reps)])
    return x, y, len(replay)


def learn(
    store: FeedbackStore,
    model_path: str | None = None,
    runs_dir: str | None = None,
    data_dir: str | None = None,
    epochs: int = EPOCHS,
    seed: int = 0,
    device: str = "cpu",
    dry_run: bool = False,
    out: Path | None = None,
    log: Callable[[str], None] = print,
    replay_per_class: int = REPLAY_PER_CLASS,
    per_canary: int = PER_CANARY,
) -> Outcome:
    """Fine-tune, score, gate and (unless ``dry_run`` or refused) promote. The last two
    arguments make a quicker, noisier run (the tests)."""
    started = time.perf_counter()
    records = store.records()
    train_rs = [r for r in records if not is_held_out(r)]
    held = [r for r in records if is_held_out(r)]
    if len(train_rs) < MIN_TRAIN:
        raise DigitrecError(
            f"learning needs {MIN_TRAIN} corrections to train on; {store.where} has "
            f"{len(records)} ({len(held)} held out to check the result): correct more answers "
            "on the page, in the window or with `digitrec correct`"
        )
    path, source = resolve_model_path(model_path, runs_dir)
    model, meta = _digit_model(path, device)
    log(
        f"learning from {len(train_rs)} corrections ({len(held)} held out), starting from "
        f"{path} ({source})"
    )
    mnist = load_dataset("mnist", data_dir)
    val_size, split_seed = validation_split(path)
    train_idx, val_idx = split_indices(len(mnist.train_images), val_size, split_seed)
    val = to_float(mnist.train_images[val_idx]), mnist.train_labels[val_idx]
    checks = {
        k: (torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long())
        for k, (x, y) in canaries(mnist, per_canary).items()
    }
    held_xy = _stack(held)
    before = score(model, val, held_xy, checks)
    x, y, replay = training_mix(
        train_rs, mnist.train_images[train_idx], mnist.train_labels[train_idx], seed,
        replay_per_class,
    )  # fmt: skip
    tuned, history = fine_tune(model, x, y, val, epochs, seed, log)
    candidate, alpha = interpolated(model, tuned, before, val, checks)
    log(f"kept {alpha:.0%} of the way from the old weights to the fine-tuned ones")
    after = score(candidate, val, held_xy, checks)
    refused = gate(before, after)
    run = out or new_run_dir(learn_root(), "learn")
    settings = {
        "model": meta["model"],
        "dataset": "mnist",
        "epochs": epochs,
        "lr": LR,
        "batch_size": BATCH,
        "seed": seed,
        "val_size": val_size,
        "split_seed": split_seed,
    }
    info = {
        "alpha": alpha,
        "parent": str(path),
        "parent_source": source,
        "corrections": len(train_rs),
        "held_out": len(held),
        "replay": replay,
        "before": asdict(before),
        "after": asdict(after),
        "refused": refused,
    }
    _write_run(run, candidate, meta, settings, info, history, val)
    if out is None:
        prune_candidates(learn_root())
    promoted = None
    if not refused and not dry_run:
        why = f"learn: {len(train_rs)} corrections, validation {100 * after.validation:.2f}%"
        promoted = registry.promote(run / "best.safetensors", why, info,
                                    registry.version_of(path), companions(path))  # fmt: skip
    seconds = time.perf_counter() - started
    return Outcome(run, before, after, refused, alpha, promoted, len(train_rs), replay, seconds)


def fine_tune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    seed: int,
    log: Callable[[str], None],
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """A copy of ``model`` trained on ``x``, ``y`` with ``model`` as its teacher, and a
    metrics row per pass (validation scored after each)."""
    tuned, history = copy.deepcopy(model), []
    t_pass = [time.perf_counter()]

    def each_pass(n: int, loss: float, acc: float) -> None:
        right, logits = _accuracy(tuned, *val)
        history.append({"epoch": n, "train_loss": loss, "train_acc": acc,
                        "val_loss": float(nn.functional.cross_entropy(logits, val[1])),
                        "val_acc": right / len(val[1]), "lr": LR,
                        "seconds": time.perf_counter() - t_pass[0]})  # fmt: skip
        t_pass[0] = time.perf_counter()
        log(f"pass {n}/{epochs}: validation {100 * right / len(val[1]):.2f}%")

    torch.manual_seed(seed)
    fit_classifier(tuned, x, y, lambda xb, g: augment_batch(xb, AUGMENT, g), epochs, seed,
                   BATCH, LR, warmup=0.1, log=lambda s: None, frozen_norm=True,
                   each_pass=each_pass, teacher=model, distill=DISTILL)  # fmt: skip
    return tuned, history


def interpolated(
    old: nn.Module,
    tuned: nn.Module,
    before: Scores,
    val: tuple[torch.Tensor, torch.Tensor],
    checks: dict[str, tuple],
) -> tuple[nn.Module, float]:
    """The weights ``alpha`` of the way from ``old`` to ``tuned`` (WiSE-FT), ``alpha``
    the largest of ``ALPHAS`` whose validation and canaries stay within the gate's limits
    (chosen on validation, never on the held-out corrections); the fine-tuned model itself
    when none does (and the gate says why)."""
    empty = (torch.empty(0, 1, 28, 28), torch.empty(0, dtype=torch.long))
    for alpha in ALPHAS:
        mix = copy.deepcopy(tuned)
        a, b = old.state_dict(), tuned.state_dict()
        mix.load_state_dict({k: torch.lerp(a[k], b[k], alpha) if b[k].is_floating_point()
                             else b[k] for k in b})  # fmt: skip
        if not forgot(before, score(mix, val, empty, checks)):
            return mix, alpha
    return tuned, 1.0


def _digit_model(path: Path, device: str) -> tuple[nn.Module, dict[str, Any]]:
    if path.suffix != ".safetensors":
        raise DigitrecError(
            f"{path}: learning fine-tunes a checkpoint (.safetensors), not an export"
        )
    model, meta = load_model(path, resolve_device(device))
    if list(meta.get("classes") or []) != list(get_spec("mnist").classes) or meta.get("reading"):
        raise DigitrecError(f"{path} is not a model of MNIST's ten digits: nothing to learn into")
    return model, meta


def _write_run(
    run: Path,
    model: nn.Module,
    parent_meta: dict[str, Any],
    settings: dict[str, Any],
    info: dict[str, Any],
    history: list[dict[str, Any]],
    val: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """The candidate as a run of its own: the checkpoint (calibrated again: fine-tuning
    moves its confidence), config.json, metrics.csv and the curves."""
    run.mkdir(parents=True, exist_ok=True)
    created = now()
    _, logits = _accuracy(model, *val)
    split = {k: settings[k] for k in ("val_size", "split_seed")}
    meta = model_record(
        parent_meta["model"],
        "mnist",
        parent_meta.get("classes"),
        parent_meta.get("normalization"),
        count_parameters(model),
        run.name,
        "learn",
        epoch=len(history),
        metrics=history[-1] if history else {},
        created=created,
        calibration={**calibrate(logits, val[1]), "split": split},
        command=" ".join(["digitrec", *sys.argv[1:]]) if sys.argv else "",
    )
    save_model(run / "best.safetensors", model, meta)
    write_config(
        run,
        {
            "run": run.name,
            "created": created,
            "command": meta["command"],
            "settings": settings,
            "params": meta["params"],
            "status": "complete",
            "best_val_acc": info["after"]["validation"],
            "learn": info,
        },
    )
    write_metrics(run, history)
    if history:
        training_curves(history, run / "curves.png")


def table(out: Outcome) -> str:
    """The before/after table ``digitrec learn`` prints."""
    b, a = out.before, out.after
    rows = [
        (
            f"validation ({a.validation_n:,})",
            f"{100 * b.validation:.2f}%",
            f"{100 * a.validation:.2f}%",
            f"{100 * (a.validation - b.validation):+.2f}",
        )
    ]
    if a.held_out_n:
        rows.append(
            (
                f"held-out corrections ({a.held_out_n})",
                f"{b.held_out} right",
                f"{a.held_out} right",
                f"{a.held_out - b.held_out:+d}",
            )
        )
    for name, was in b.canaries.items():
        now_ = a.canaries[name]
        rows.append(
            (
                f"canary: {name}",
                f"{100 * was:.2f}%",
                f"{100 * now_:.2f}%",
                f"{100 * (now_ - was):+.2f}",
            )
        )
    lines = [f"{'':<28} {'before':>9} {'after':>9} {'change':>7}"]
    lines += [f"{r[0]:<28} {r[1]:>9} {r[2]:>9} {r[3]:>7}" for r in rows]
    return "\n".join(lines)
