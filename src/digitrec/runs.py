"""Training runs on disk: where they live, how to list them, how to pick the best.

A run is a directory ``runs/<timestamp>-<model>/`` holding ``config.json``,
``metrics.csv``, ``best.safetensors``, ``last.safetensors``, ``state.safetensors``
(to resume), ``curves.png`` and, once evaluated, ``report.json``.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from digitrec.errors import CheckpointError, DigitrecError

RUNS_DIR_ENV = "DIGITREC_RUNS_DIR"
SHIPPED = "default"  # names the model shipped in the package where a run or checkpoint goes


def runs_root(flag: str | os.PathLike[str] | None = None) -> Path:
    """--runs-dir, then $DIGITREC_RUNS_DIR, then ./runs."""
    return Path(flag or os.environ.get(RUNS_DIR_ENV) or "runs").expanduser()


def new_run_dir(root: Path, model: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{model}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{model}-{n}"
    path.mkdir(parents=True)
    return path


def resolve_run(arg: str | os.PathLike[str], root: Path | None = None) -> Path:
    """A run given as a path or as a directory name under the runs root."""
    root = root or runs_root()
    p = Path(arg)
    for cand in (p, root / p):
        if (cand / "config.json").is_file():
            return cand
    if holds_runs(p):
        raise DigitrecError(
            f"{arg} is a folder of runs, not a run: name one of them "
            f"(`digitrec runs --runs-dir {arg}` lists them)"
        )
    where = str(p) if p.is_absolute() else f"{p} or {root / p}"
    raise DigitrecError(
        f"No run {str(arg)!r}: no config.json in {where}. `digitrec runs` lists the runs."
    )


def holds_runs(p: Path) -> bool:
    try:
        return p.is_dir() and any((c / "config.json").is_file() for c in p.iterdir())
    except OSError:  # unreadable: not for us to say
        return False


def resolve_checkpoint(arg: str | os.PathLike[str], root: Path | None = None) -> Path:
    """A checkpoint file, a run (its best.safetensors), or ``default``: the shipped model."""
    p = Path(arg)
    if p.is_file():
        return p
    if str(arg) == SHIPPED and not (root or runs_root()).joinpath(SHIPPED).is_dir():
        from digitrec.predictor import shipped_model_path

        return shipped_model_path()
    if p.is_dir() or not p.suffix:
        return resolve_run(p, root) / "best.safetensors"
    raise CheckpointError(f"No checkpoint at {p}")


@dataclass
class RunSummary:
    path: Path
    model: str
    dataset: str
    status: str
    epochs: int
    val_acc: float | None
    test_acc: float | None
    params: int
    train_seconds: float


def read_metrics(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def summarize(run: Path) -> RunSummary:
    cfg = json.loads((run / "config.json").read_text())
    rows = read_metrics(run)
    val = max((float(r["val_acc"]) for r in rows if r["val_acc"]), default=None)
    test = None
    if (run / "report.json").is_file():
        test = json.loads((run / "report.json").read_text()).get("accuracy")
    return RunSummary(
        path=run,
        model=cfg["settings"]["model"],
        dataset=cfg["settings"]["dataset"],
        status=cfg.get("status", "?"),
        epochs=len(rows),
        val_acc=val,
        test_acc=test,
        params=cfg.get("params", 0),
        train_seconds=sum(float(r["seconds"]) for r in rows),
    )


def list_runs(root: Path) -> list[RunSummary]:
    """Every run under root, best validation accuracy first."""
    if not root.is_dir():
        return []
    runs = []
    for d in sorted(root.iterdir()):
        if (d / "config.json").is_file():
            try:
                runs.append(summarize(d))
            except (ValueError, KeyError, OSError):
                continue  # a run being written or damaged is not worth failing a listing for
    return sorted(runs, key=lambda r: -(r.val_acc or -1.0))


def best_checkpoint(root: Path, dataset: str = "mnist") -> Path | None:
    """The best.safetensors of the run with the highest validation accuracy on ``dataset``."""
    for run in list_runs(root):
        if run.dataset == dataset and (run.path / "best.safetensors").is_file():
            return run.path / "best.safetensors"
    return None
