"""Ensembles: several trained runs averaged into one model, saved as one run.

``digitrec ensemble RUN RUN ...`` writes a run directory like any other: its
``best.safetensors`` holds every member's weights and a record naming them, so
``evaluate``, ``predict``, ``serve``, ``gui`` and ``export`` take it as they take a
single model (``models.Ensemble``: the mean of the members' probabilities).

``--average`` makes one model instead: the (weighted) mean of the members' weights,
for members fine-tuned from one another (``digitrec train --init``). A model and its
fine-tuned version lie in one basin of the loss, so their average keeps what each does
well (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): here the model
fine-tuned on outlines, stray lines and warps, averaged with the one it started from,
kept the original's accuracy on clean input and most of the fine-tuned one's gain on
corrupted input. It costs what one member costs to run.

Its validation accuracy is measured on the validation split the members share. If they
were not held out on the same split (another ``--split-seed`` or ``--val-size``), one
member's validation images are another's training images: the ensemble is still
written, but with no validation score, rather than a flattering one.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from digitrec.calibration import calibrate_checkpoint
from digitrec.checkpoint import ENSEMBLE, load_model, save_model
from digitrec.data import load_dataset, split_indices, to_float
from digitrec.errors import CheckpointError
from digitrec.models import Ensemble, batched_logits, count_parameters
from digitrec.recipes import TrainConfig
from digitrec.records import Required, now
from digitrec.runs import (
    RUN_RECORD,
    model_record,
    read_config,
    read_json,
    resolve_checkpoint,
    shipped_model_path,
    write_config,
    write_metrics,
)


@dataclass
class Member:
    checkpoint: Path
    model: torch.nn.Module
    meta: dict[str, Any]
    settings: TrainConfig | None  # None for a bare checkpoint outside a run
    train_seconds: float


@dataclass
class EnsembleResult:
    run_dir: Path
    val_acc: float | None  # None when the members share no validation split
    member_val_accs: list[float | None]
    note: str


def average_weights(models: list[torch.nn.Module], weights: list[float]) -> torch.nn.Module:
    """One model whose every parameter and batch-norm statistic is the weighted mean of the
    members' (batch counters, integers, are the first member's)."""
    states = [m.state_dict() for m in models]
    mean = {
        k: sum(w * st[k] for w, st in zip(weights, states, strict=True))
        if v.is_floating_point()
        else v
        for k, v in states[0].items()
    }
    model = copy.deepcopy(models[0])
    model.load_state_dict(mean)
    return model.eval()


def _shares(weights: list[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1 / n] * n
    bad = any(not math.isfinite(w) or w < 0 for w in weights)
    if len(weights) != n or bad or sum(weights) <= 0:
        raise CheckpointError(
            f"--weights: give one non-negative share per member ({n}), not all zero; got {weights}"
        )
    return [w / sum(weights) for w in weights]


def _member(target: str | Path, root: Path | None) -> Member:
    ckpt = resolve_checkpoint(target, root)
    model, meta = load_model(ckpt)
    if meta["model"] == ENSEMBLE:
        raise CheckpointError(f"{ckpt} is already an ensemble: give the runs it was made from")
    settings, seconds = None, 0.0
    if ckpt.resolve() == shipped_model_path().resolve():  # its run's config is kept in default.json
        cfg = read_json(ckpt.with_name("default.json"), {"config": Required(RUN_RECORD)})["config"]
    elif (ckpt.parent / "config.json").is_file():
        cfg = read_config(ckpt.parent)
    else:
        cfg = None
    if cfg is not None:
        settings = TrainConfig.from_dict(cfg["settings"])
        seconds = float(cfg.get("train_seconds") or 0.0)
    return Member(ckpt, model, meta, settings, seconds)


def make_ensemble(
    targets: list[str | Path],
    run_dir: Path,
    data_dir: str | None = None,
    root: Path | None = None,
    average: bool = False,
    weights: list[float] | None = None,
) -> EnsembleResult:
    """Combine the runs (or checkpoints) ``targets`` into a new run at ``run_dir``: a model
    averaging their probabilities, or with ``average`` their weights."""
    if len(targets) < 2:
        raise CheckpointError("An ensemble needs at least two runs or checkpoints")
    if weights is not None and not average:
        raise CheckpointError("--weights goes with --average (an ensemble's members count equally)")
    shares = _shares(weights, len(targets))
    members = [_member(t, root) for t in targets]
    model = _combine(members, average, shares)
    val_acc, val_loss, accs, note = _validate(members, model, data_dir)
    records = [
        {
            "model": m.meta["model"],
            "normalization": m.meta.get("normalization"),
            "run": m.meta.get("run"),
            "recipe": m.meta.get("recipe"),
            "epoch": m.meta.get("epoch"),
            "seed": m.settings.seed if m.settings else None,
            "checkpoint": str(m.checkpoint),
            "val_acc": acc,
            **({"share": share} if average else {}),
        }
        for m, acc, share in zip(members, accs, shares, strict=True)
    ]
    seconds = sum(m.train_seconds for m in members)
    row = {"epoch": 0, "val_loss": val_loss, "val_acc": val_acc, "seconds": seconds}
    _write_run(run_dir, model, members, records, average, row if val_acc is not None else None,
               note)  # fmt: skip
    if val_acc is not None:  # else no split is known to be held out of every member
        calibrate_checkpoint(run_dir / "best.safetensors", data_dir)
    return EnsembleResult(run_dir, val_acc, accs, note)


def _combine(members: list[Member], average: bool, shares: list[float]) -> torch.nn.Module:
    """The members' probabilities averaged, or with ``average`` their weights."""
    first = members[0].meta
    for m in members[1:]:
        if (m.meta.get("dataset"), m.meta.get("classes")) != (
            first.get("dataset"),
            first.get("classes"),
        ):
            raise CheckpointError(
                f"{m.checkpoint} was trained on {m.meta.get('dataset')!r}, "
                f"{members[0].checkpoint} on {first.get('dataset')!r}: members must share "
                "a dataset and classes"
            )
    if not average:
        return Ensemble([m.model for m in members]).eval()
    kinds = {m.meta["model"] for m in members}
    if len(kinds) > 1:
        raise CheckpointError(
            f"--average needs members of one architecture, got {', '.join(sorted(kinds))}: "
            "average a model with its fine-tuned versions (digitrec train --init)"
        )
    return average_weights([m.model for m in members], shares)


def _validate(
    members: list[Member], model: torch.nn.Module, data_dir: str | None
) -> tuple[float | None, float | None, list[float | None], str]:
    """Validation accuracy and loss of ``model`` and each member's accuracy, when the
    members were validated on one split; else Nones and why."""
    splits = {
        (s.dataset, s.val_size, s.split_seed, s.limit == 0) if s else None
        for s in (m.settings for m in members)
    }
    why = ""
    if None in splits:
        why = "a member is a bare checkpoint, not a run"
    elif len(splits) > 1:
        why = "the members were validated on different splits"
    elif next(iter(splits))[1] == 0:
        why = "the members were trained on every image (--val-size 0)"
    if why:
        return None, None, [None] * len(members), f"no validation score: {why}"
    dataset, val_size, split_seed, _ = splits.pop()
    ds = load_dataset(dataset, data_dir)
    _, val_idx = split_indices(len(ds.train_images), val_size, split_seed)
    x, y = to_float(ds.train_images[val_idx]), ds.train_labels[val_idx]
    accs = [(batched_logits(m.model, x).argmax(1) == y).float().mean().item() for m in members]
    logits = batched_logits(model, x)
    val_acc = (logits.argmax(1) == y).float().mean().item()
    note = f"validation split of {val_size} images (split seed {split_seed}) shared by all"
    return val_acc, F.cross_entropy(logits, y).item(), accs, note


def _write_run(
    run_dir: Path,
    model: torch.nn.Module,
    members: list[Member],
    records: list[dict],
    average: bool,
    row: dict | None,
    note: str,
) -> None:
    """The ensemble as a run: best.safetensors, config.json and metrics.csv."""
    run_dir.mkdir(parents=True, exist_ok=True)
    first, settings, created = members[0].meta, members[0].settings, now()
    meta = model_record(
        first["model"] if average else ENSEMBLE,
        first.get("dataset", "mnist"),
        first.get("classes"),
        first.get("normalization"),
        count_parameters(model),
        run_dir.name,
        "average" if average else ENSEMBLE,
        members=records,
        metrics=row or {},
        created=created,
    )
    save_model(run_dir / "best.safetensors", model, meta)
    write_config(
        run_dir,
        {
            "run": run_dir.name,
            "created": created,
            "command": " ".join(["digitrec", *sys.argv[1:]]) if sys.argv else "",
            "settings": {
                "model": meta["model"],
                "dataset": meta["dataset"],
                "val_size": settings.val_size if settings else None,
                "split_seed": settings.split_seed if settings else None,
            },
            "members": records,
            "params": meta["params"],
            "status": "complete",
            "best_val_acc": row["val_acc"] if row else None,
            "train_seconds": sum(m.train_seconds for m in members),
            "note": note,
        },
    )
    write_metrics(run_dir, [row] if row else [])
