"""Training runs on disk: where they live, how to list them, how to pick the best.

A run is a directory ``runs/<timestamp>-<model>/`` holding ``config.json``,
``metrics.csv``, ``best.safetensors``, ``last.safetensors``, ``state.safetensors``
(to resume), ``curves.png`` and, once evaluated, ``report.json``; ``.lock`` is held by
the process training into it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from digitrec.errors import CheckpointError, DigitrecError
from digitrec.files import write_json, write_text
from digitrec.recipes import TrainConfig
from digitrec.records import Number, Required, check
from digitrec.registry import active as active_version
from digitrec.registry import shipped_model_path

try:
    import fcntl
except ImportError:  # Windows: runs are not locked there
    fcntl = None  # type: ignore[assignment]

RUNS_DIR_ENV = "DIGITREC_RUNS_DIR"
MODEL_ENV = "DIGITREC_MODEL"
SHIPPED = "default"  # names the model shipped in the package where a run or checkpoint goes
LOCK = ".lock"
METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]

_TYPES = {str: str, int: int, float: Number, bool: bool}
# A run's config.json, as far as digitrec reads it back. Every setting is optional (older
# runs lack newer ones; an ensemble's has a few) but the model and the dataset.
RUN_RECORD = {
    "settings": Required(
        {
            f.name: Required(_TYPES[t]) if f.name in ("model", "dataset") else _TYPES[t]
            for f in fields(TrainConfig)
            for t in [get_type_hints(TrainConfig)[f.name]]
        }
    ),
    "status": str,
    "params": int,
    "best_val_acc": Number,
    "train_seconds": Number,
    "run": str,
    "created": str,
}


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
        return shipped_model_path()
    if p.is_dir() or not p.suffix:
        return resolve_run(p, root) / "best.safetensors"
    raise CheckpointError(f"No checkpoint at {p}")


def read_json(path: Path, rule: Any) -> Any:
    """A JSON record digitrec wrote, checked against ``rule``; a damaged one is refused."""
    try:
        return check(json.loads(path.read_text()), rule, str(path))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DigitrecError(f"{path} is damaged: not readable JSON ({exc})") from None


def read_config(run: Path) -> dict[str, Any]:
    return read_json(run / "config.json", RUN_RECORD)


def write_config(run: Path, config: dict[str, Any]) -> None:
    write_json(run / "config.json", config)


def refuse_existing(run: Path, hint: str = "use --resume or another --out") -> None:
    if (run / "config.json").exists():
        raise DigitrecError(f"{run} already holds a run; {hint}")


def model_record(
    model: str,
    dataset: str,
    classes: list[str] | None,
    normalization: dict[str, float] | None,
    params: int,
    run: str,
    recipe: str,
    **extra: Any,
) -> dict[str, Any]:
    """What a run's checkpoint says of itself (checked on load against checkpoint.RECORD):
    the model and what it reads, where it came from, and ``extra`` (epoch, metrics,
    members, the command...)."""
    return {
        "model": model,
        "dataset": dataset,
        "classes": list(classes) if classes is not None else None,
        "normalization": normalization,
        "input": [1, 28, 28],
        "params": params,
        "run": run,
        "recipe": recipe,
        **extra,
    }


def write_metrics(run: Path, history: list[dict[str, Any]]) -> None:
    """metrics.csv: one row an epoch, floats to 6 significant digits."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(run / "metrics.csv", buf.getvalue())


@contextlib.contextmanager
def locked(run: Path) -> Iterator[None]:
    """Hold ``run`` for this process alone: two `train` of one --out (or two --resume of one
    run) both trained and finished, one's checkpoint beside the other's config."""
    run.mkdir(parents=True, exist_ok=True)
    with open(run / LOCK, "a+") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                pid = fh.read().strip()
                raise DigitrecError(
                    f"{run} is in use by another digitrec process"
                    + (f" (pid {pid})" if pid.isdigit() else "")
                    + ": wait for it to finish, or stop it"
                ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield  # closing the file releases the lock; the file stays (removing it would race)


def in_use(run: Path) -> bool:
    """Whether a process holds ``run`` (so a "running" status is true, not a killed run's)."""
    if fcntl is None or not (run / LOCK).is_file():
        return False
    try:
        with open(run / LOCK) as fh:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


# Temporary files of writes a killed process never finished: ours (.NAME.XXXX.tmp, see
# files.atomic_path) and the safetensors library's own (.tmpXXXXXX beside them).
_STALE = re.compile(r"\..+\.tmp|\.tmp\w{6}")


def remove_stale_temporaries(run: Path) -> list[str]:
    """Delete them; only under the run's lock, when no live process can be writing one."""
    removed = [f.name for f in run.iterdir() if f.is_file() and _STALE.fullmatch(f.name)]
    for name in removed:
        (run / name).unlink(missing_ok=True)
    return removed


@dataclass
class RunSummary:
    path: Path
    model: str = "?"
    dataset: str = "?"
    status: str = "?"
    epochs: int = 0
    val_acc: float | None = None
    test_acc: float | None = None
    params: int = 0
    train_seconds: float = 0.0
    damaged: str = ""  # why the run cannot be read; empty for a sound one
    split: tuple[int, int] | None = None  # its validation split: (val_size, split_seed)


def read_metrics(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def summarize(run: Path) -> RunSummary:
    cfg = read_config(run)
    try:
        rows = read_metrics(run)
        val = max((float(r["val_acc"]) for r in rows if r["val_acc"]), default=None)
        seconds = sum(float(r["seconds"]) for r in rows)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, csv.Error) as exc:
        raise DigitrecError(f"{run / 'metrics.csv'} is damaged ({exc})") from None
    test = None
    if (run / "report.json").is_file():
        test = read_json(run / "report.json", {"accuracy": Number}).get("accuracy")
    status = cfg.get("status", "?")
    if status == "running" and not in_use(run):
        status = "stopped (killed?): resume it with --resume"
    return RunSummary(
        path=run,
        model=cfg["settings"]["model"],
        dataset=cfg["settings"]["dataset"],
        status=status,
        epochs=len(rows),
        val_acc=val,
        test_acc=test,
        params=cfg.get("params") or 0,
        train_seconds=seconds,
        split=split_of(cfg["settings"]),
    )


def list_runs(root: Path) -> list[RunSummary]:
    """Every run under root, best validation accuracy first, damaged ones last."""
    if not root.is_dir():
        return []
    runs = []
    for d in sorted(root.iterdir()):
        if (d / "config.json").is_file():
            try:
                runs.append(summarize(d))
            except DigitrecError as exc:
                runs.append(RunSummary(d, damaged=str(exc)))
    return sorted(runs, key=lambda r: (bool(r.damaged), -(r.val_acc or -1.0)))


def split_of(settings: dict[str, Any]) -> tuple[int, int]:
    """The validation split (val_size, split_seed) a run's settings held out; runs from
    before split_seed split by their seed (as ``TrainConfig`` reads them)."""
    size = settings.get("val_size")
    seed = settings.get("split_seed", settings.get("seed"))
    return (
        TrainConfig.val_size if size is None else int(size),
        TrainConfig.split_seed if seed is None else int(seed),
    )


def best_run(root: Path, dataset: str = "mnist") -> RunSummary | None:
    """The run with the highest validation accuracy on ``dataset`` that has a checkpoint."""
    for run in list_runs(root):
        if run.dataset == dataset and not run.damaged and (run.path / "best.safetensors").is_file():
            return run
    return None


def shipped_validation() -> tuple[float, tuple[int, int]] | None:
    """The shipped model's validation accuracy and split (val_size, split_seed), from the
    record the ship tool writes beside it; None without one."""
    try:
        record = json.loads(shipped_model_path().with_suffix(".json").read_text())
        return float(record["validation"]["val_acc"]), split_of(record["config"]["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reading_model_path(model: Path, kind: str = "reader") -> Path:
    """Where a digit model's reading model (``kind``: or any other companion) is kept:
    ``NAME.KIND.safetensors`` beside ``NAME.safetensors`` (or its exports, ``NAME.onnx``
    and ``NAME.int8.onnx``)."""
    name = model.name
    for suffix in (".int8.onnx", ".onnx", ".safetensors"):
        name = name.removesuffix(suffix)
    return model.with_name(f"{name}.{kind}.safetensors")


COMPANIONS = ("reader", "lines", "notdigit")


def companions(model: Path) -> list[Path]:
    """The files of every companion beside ``model``: ``NAME.KIND.*`` (a reading model and
    its exports, a line model, a "not a digit" detector)."""
    stem = reading_model_path(model, "x").name.removesuffix(".x.safetensors")
    return sorted(p for kind in COMPANIONS for p in model.parent.glob(f"{stem}.{kind}.*")
                  if p.is_file())  # fmt: skip


def companion_or_shipped(model: Path | None, kind: str) -> Path:
    """A model every digit model can use (``kind``: the line model, ``lines``, or the "not a
    digit" detector, ``notdigit``): ``NAME.KIND.safetensors`` beside the digit model (or
    beside its exports) when there is one, else the one shipped in the package."""
    if model is not None and (mine := reading_model_path(model, kind)).is_file():
        return mine
    return shipped_model_path().with_name(f"default.{kind}.safetensors")


def pinned() -> bool:
    """Whether $DIGITREC_MODEL names the model (then the registry has no say)."""
    return bool(os.environ.get(MODEL_ENV))


@dataclass(frozen=True)
class Choice:
    """The model to use: its checkpoint, where it came from (a label for status lines and
    /api/model) and why it was chosen (a sentence for people)."""

    path: Path
    source: str
    why: str


def choose_model(
    model_path: str | os.PathLike[str] | None = None, runs_dir: str | None = None
) -> Choice:
    """The first of: ``--model-path``, ``$DIGITREC_MODEL``, the registry's active version
    (``digitrec model``), the best run under the runs directory when it beats the shipped
    model on the same validation split, the shipped model. A run validated on another
    split, or worse, is used only when named: a one-epoch run must not silently replace a
    better model."""
    for value, source in ((model_path, "--model-path"), (os.environ.get(MODEL_ENV), MODEL_ENV)):
        if value:
            p = Path(value)
            if p.is_dir():  # a run directory
                p = resolve_run(p) / "best.safetensors"
            if not p.is_file():
                raise CheckpointError(f"{source}: no checkpoint at {p}")
            return Choice(p, source, f"the model named by {source}")
    if (version := active_version()) is not None:
        why = f"registry version {version.number}, the active one (`digitrec model list`)"
        return Choice(version.path, f"registry version {version.number}", why)
    run, shipped = best_run(runs_root(runs_dir)), shipped_model_path()
    if not shipped.is_file():
        if run is not None:
            return Choice(run.path / "best.safetensors", f"best run ({run.path.name})",
                          "the best run; no model is shipped in this install")  # fmt: skip
        raise CheckpointError(
            "No model found: no --model-path, no $DIGITREC_MODEL, no active registry version, "
            f"no run under {runs_root(runs_dir)}, and no shipped default. Train one with "
            "`digitrec train`."
        )
    if run is None:
        return Choice(shipped, "shipped default", "the model shipped with digitrec; no runs yet")
    better, why = _against_shipped(run)
    if better:
        return Choice(run.path / "best.safetensors", f"best run ({run.path.name})", why)
    return Choice(shipped, "shipped default", why)


def _against_shipped(run: RunSummary) -> tuple[bool, str]:
    """Whether ``run`` beats the shipped model on the same validation split, and why."""
    shipped = shipped_validation()
    named = f"name it with --model-path {run.path} to use it"
    if shipped is None or run.val_acc is None or run.split != shipped[1]:
        why = f"the best run {run.path.name} was not validated on the shipped model's split"
        return False, f"the shipped model; {why}, so they cannot be compared: {named}"
    ours, theirs = run.val_acc, shipped[0]
    if ours > theirs:
        return True, (f"the best run {run.path.name}: {ours:.2%} on validation, above the "
                      f"shipped model's {theirs:.2%} on the same split")  # fmt: skip
    return False, (f"the shipped model ({theirs:.2%} on validation); the best run "
                   f"{run.path.name} has {ours:.2%} on the same split: {named}")  # fmt: skip


def resolve_model_path(
    model_path: str | os.PathLike[str] | None = None, runs_dir: str | None = None
) -> tuple[Path, str]:
    """``choose_model``'s checkpoint and source."""
    c = choose_model(model_path, runs_dir)
    return c.path, c.source
