"""The ``digitrec`` command line: data, models, train, runs, evaluate, predict.

Every subcommand reports problems it knows about as one line starting
``error:`` and exit code 2; Ctrl-C during training exits 130 after saving.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from digitrec.errors import DigitrecError, Interrupted

GRID_MAX = 100  # images drawn by `predict --random`

EPILOG = """examples:
  digitrec data verify
  digitrec train --recipe fast
  digitrec runs
  digitrec evaluate runs/20261122-101500-fast
  digitrec predict my_digit.png another.jpg
  digitrec predict photos/
  digitrec predict --random 20
  digitrec read number.png

environment:
  DIGITREC_DATA_DIR   where datasets live (default ~/.cache/digitrec/data)
  DIGITREC_RUNS_DIR   where training runs are written (default ./runs)
  DIGITREC_MODEL      the model predict, serve and gui use (default: the registry's active
                      version, else the best run, else the shipped model)
  DIGITREC_HOME       corrections and the model registry (default ~/.local/share/digitrec)
  DIGITREC_FEEDBACK_URL  the corrections store (default: feedback.sqlite3 in DIGITREC_HOME)
"""


def _data_args(p: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        p.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    p.add_argument("--data-dir", help="dataset directory (default $DIGITREC_DATA_DIR or cache)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitrec",
        description="Handwritten digit recognition: data, model zoo, training, evaluation, "
        "prediction.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from digitrec import __version__

    parser.add_argument("--version", action="version", version=f"digitrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data_commands(sub)
    _add_train_command(sub)
    _add_ensemble_command(sub)
    _add_evaluate_commands(sub)
    _add_predict_commands(sub)
    _add_read_command(sub)
    _add_apps_commands(sub)
    _add_export_commands(sub)
    _add_feedback_commands(sub)
    _add_learn_commands(sub)
    return parser


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """`data download|verify|show` and `models`."""
    data = sub.add_parser("data", help="download, verify and look at datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = dsub.add_parser(
        "download", help="fetch missing files from the official mirrors (MD5-checked)"
    )
    _data_args(p)
    p.add_argument("--mirror", action="append", help="base URL to try instead (repeatable)")
    p = dsub.add_parser("verify", help="check every file's checksum and count images per class")
    _data_args(p)
    p = dsub.add_parser("show", help="write a grid of samples and the class distribution as PNG")
    _data_args(p)
    p.add_argument("--out", default=".", help="directory for samples.png and classes.png")
    p.add_argument("--seed", type=int, default=0)
    sub.add_parser("models", help="list the model zoo with parameter counts")


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    """`train`: every setting of a recipe, and where the run goes."""
    from digitrec.models import MODELS
    from digitrec.recipes import OPTIMIZERS, PRECISIONS, RECIPES, SCHEDULES

    p = sub.add_parser(
        "train",
        help="train a model into runs/<timestamp>-<model>/",
        description="Train a model. A recipe sets every default; flags override it. "
        f"Recipes: {', '.join(RECIPES)}. With --model alone, the model's own recipe is used.",
    )
    p.add_argument("--recipe", choices=list(RECIPES), help="named set of settings (default: fast)")
    p.add_argument("--model", help=", ".join(MODELS))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (the peak, for onecycle)")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random rotation, translation, scaling and shear on the device",
    )
    p.add_argument("--rotate", type=float, help="with --augment: rotation range in degrees")
    p.add_argument("--elastic", type=float, help="with --augment: share of images warped")
    p.add_argument("--strays", type=float, help="with --augment: share given a stray line")
    p.add_argument(
        "--outline", type=float, help="with --augment: share reduced to their strokes' outline"
    )
    p.add_argument(
        "--pen", type=float, help="with --augment: share redrawn with an even pen (skeleton)"
    )
    p.add_argument(
        "--styles", type=float, help="with --augment: share of 1s given a flag, of 7s a bar"
    )
    p.add_argument("--label-smoothing", type=float)
    p.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="keep a moving average of the weights (e.g. 0.999) and validate and save it",
    )
    p.add_argument(
        "--early-stop",
        type=int,
        metavar="PATIENCE",
        help="stop after this many epochs without a better validation accuracy",
    )
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start from these weights (fine-tune): a checkpoint, a run, or 'default' for "
        "the shipped model",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="bfloat16 autocast: auto (where the hardware does it natively), bf16, fp32",
    )
    p.add_argument(
        "--val-size",
        type=int,
        help="validation images held out of training (0: train on all, once a recipe is chosen)",
    )
    p.add_argument(
        "--split-seed", type=int, help="seed of the validation split (default 0, for every run)"
    )
    p.add_argument("--limit", type=int, help="train on only this many images (quick tries)")
    p.add_argument("--out", help="run directory (default <runs-dir>/<timestamp>-<model>)")
    p.add_argument("--runs-dir", help="where runs go (default $DIGITREC_RUNS_DIR or ./runs)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _data_args(p, dataset=False)
    p.add_argument("--dataset", help="mnist (default) or fashion-mnist")


def _add_ensemble_command(sub: argparse._SubParsersAction) -> None:
    """`ensemble`: runs combined into one model, written as a run."""
    p = sub.add_parser(
        "ensemble",
        help="average several runs into one model, written as a new run",
        description="Combine runs (or checkpoints) into one model whose probabilities are the "
        "mean of theirs, or with --average whose weights are the mean of theirs. The result is "
        "a run like any other: evaluate, predict, serve, gui and export take it.",
    )
    p.add_argument(
        "members", nargs="+", metavar="RUN|CHECKPOINT", help="'default' is the shipped model"
    )
    p.add_argument(
        "--average",
        action="store_true",
        help="average the members' weights into one model of their architecture (for a model "
        "and its fine-tuned versions, see train --init) instead of their probabilities",
    )
    p.add_argument(
        "--weights", type=float, nargs="+", metavar="W", help="with --average: each member's share"
    )
    p.add_argument("--out", help="run directory (default <runs-dir>/<timestamp>-ensemble)")
    p.add_argument("--runs-dir", help="where runs are (default $DIGITREC_RUNS_DIR or ./runs)")
    _data_args(p, dataset=False)


def _add_evaluate_commands(sub: argparse._SubParsersAction) -> None:
    """`runs`, `evaluate` and `calibrate`."""
    from digitrec.calibration import MAX_RISK

    p = sub.add_parser("runs", help="list training runs, best validation accuracy first")
    p.add_argument("--runs-dir")
    p = sub.add_parser("evaluate", help="test-set metrics, confusion matrix, calibration, report")
    p.add_argument("target", metavar="RUN|CHECKPOINT")
    p.add_argument("--out", help="report directory (default: the run, or <checkpoint>-report)")
    p.add_argument(
        "--tta", action="store_true", help="average test-time views (report in RUN/tta/)"
    )
    p.add_argument("--runs-dir")
    p.add_argument("--device", default="auto")
    _data_args(p, dataset=False)
    p = sub.add_parser(
        "calibrate",
        help="fit a model's temperature and 'not sure' threshold on its validation split",
        description="Fit the temperature that makes a model's confidences honest and the "
        "'not sure' threshold (the lowest confidence that keeps errors among the answers "
        "within --max-risk), on the validation split its run held out (5,000 images, seed 0 "
        "for a bare checkpoint), and store both in the checkpoint; its ONNX exports are "
        "made again so they carry them. `train` and `ensemble` do this at the end of a run.",
    )
    p.add_argument("target", metavar="RUN|CHECKPOINT", help="a run, a checkpoint, or default")
    p.add_argument(
        "--max-risk", type=float, default=MAX_RISK, metavar="R",
        help="share of errors allowed among the answers (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--runs-dir")
    _data_args(p, dataset=False)


def _add_predict_commands(sub: argparse._SubParsersAction) -> None:
    """`predict`: images, folders, or random test images."""
    from digitrec.preprocess import FORMAT_NAMES

    p = sub.add_parser("predict", help="recognize digits in image files, or in random test images")
    p.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help=f"{FORMAT_NAMES} files, or folders of them",
    )
    p.add_argument("-r", "--recursive", action="store_true", help="read folders' subfolders too")
    p.add_argument("--random", type=int, metavar="N", help="predict N random MNIST test images")
    p.add_argument("--seed", type=int, default=0, help="for --random")
    p.add_argument(
        "--grid",
        default="predictions.png",
        help=f"PNG grid written by --random (at most {GRID_MAX} images, mistakes first)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--tta", action="store_true", help="test-time augmentation: average 7 shifted/rotated views"
    )
    p.add_argument(
        "--model-path",
        help="checkpoint or run (default: $DIGITREC_MODEL, the registry's active version, "
        "best run, shipped model)",
    )
    p.add_argument("--runs-dir")
    p.add_argument("--device", default="cpu")
    _backend_arg(p)
    _data_args(p, dataset=False)


def _add_read_command(sub: argparse._SubParsersAction) -> None:
    """`read`: every digit of a number, in lines."""
    from digitrec.preprocess import FORMAT_NAMES

    p = sub.add_parser(
        "read",
        help="read whole numbers: every digit in each image, line by line",
        description="Find every digit in each image and print the number, one line of "
        "text per line of digits, with '.', ',' and a leading '-' where written.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help=f"{FORMAT_NAMES} files, or folders")
    p.add_argument("-r", "--recursive", action="store_true", help="read folders' subfolders too")
    p.add_argument("--json", action="store_true", help="one record per file, each character's "
                   "box (source pixels), confidence and probabilities")  # fmt: skip
    p.add_argument("--model-path", help="checkpoint or run (default: the usual resolution)")
    p.add_argument("--runs-dir")
    _backend_arg(p)
    p = sub.add_parser(
        "train-reader",
        help="teach a digit model to read whole numbers: its reading model",
        description="Fine-tune a digit model with an 11th class, 'none', on the crops `read` "
        "tries in numbers composed from training-split digits (touching, overlapping, apart), "
        "so it can tell a whole digit from half a digit or two. Written beside the model as "
        "NAME.reader.safetensors, where `read`, the API and the apps find it.",
    )
    p.add_argument("--numbers", type=int, default=16000, help="training numbers composed")
    p.add_argument("--epochs", type=float, default=1.2, help="passes over crops and digits")
    _companion_args(p, "reader", "reading model")
    p = sub.add_parser(
        "train-lines",
        help="train the line model that reads touching digits whole",
        description="Train, from scratch, the model `read` uses for a line whose digits touch "
        "or overlap: it reads the whole line (CTC), trained on lines composed from "
        "training-split digits. Written beside the digit model as NAME.lines.safetensors, "
        "where `read`, the API and the apps find it (else they use the shipped one).",
    )
    p.add_argument("--lines", type=int, default=120_000, help="training lines composed")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the lines")
    p.add_argument("--workers", type=int, default=2, help="processes composing lines")
    _companion_args(p, "lines", "line model")
    p = sub.add_parser(
        "train-notdigit",
        help="train the detector that answers 'not a digit' for junk",
        description="Train, from scratch, the small model that tells a digit from junk "
        "(scribbles, letters, symbols, blots, dots, Fashion-MNIST's clothes), all drawn from "
        "training data and seeds of its own, its threshold chosen on the validation split. "
        "Written beside the digit model as NAME.notdigit.safetensors, where `predict`, the "
        "API and the apps find it (else they use the shipped one).",
    )
    p.add_argument("--digits", type=int, default=30000, help="training-split digits")
    p.add_argument("--junk", type=int, default=4000, help="renders of each kind of junk")
    p.add_argument("--skip", metavar="KIND", help="leave one kind of junk (scribble, letter, "
                   "...) out of training: to measure it on a kind never seen")  # fmt: skip
    p.add_argument("--epochs", type=float, default=8.0, help="passes over the examples")
    p.add_argument("--workers", type=int, default=2, help="processes drawing the examples")
    _companion_args(p, "notdigit", "detector")


def _companion_args(p: argparse.ArgumentParser, kind: str, what: str) -> None:
    """The flags of every command that trains a model to go beside a digit model."""
    p.add_argument("--model-path", help="the digit model it is for (default: the usual "
                   "resolution)")  # fmt: skip
    p.add_argument("--out", help=f"where to write it (default: NAME.{kind}.safetensors beside)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help=f"replace an existing {what}")
    p.add_argument("--runs-dir")
    p.add_argument("--device", default="auto")
    _data_args(p, dataset=False)


def _add_apps_commands(sub: argparse._SubParsersAction) -> None:
    """`serve` and `gui`: the two apps."""
    p = sub.add_parser("serve", help="the web app: draw or upload digits in the browser")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-path", help="checkpoint or run (default: the usual resolution)")
    p.add_argument("--workers", type=int, default=1, help="server processes")
    _feedback_arg(p)
    _backend_arg(p)
    p = sub.add_parser("gui", help="the desktop app: draw or open digits in a window")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="an image to open at start")
    p.add_argument("--model-path", help="checkpoint or run (default: the usual resolution)")
    p.add_argument("--runs-dir")
    _feedback_arg(p)
    _backend_arg(p)


def _add_export_commands(sub: argparse._SubParsersAction) -> None:
    """`export`: ONNX, parity-checked, optionally int8."""
    p = sub.add_parser("export", help="export a model to ONNX, check parity, quantize to int8")
    p.add_argument("model", metavar="RUN|CHECKPOINT")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--quantize", choices=["int8"], help="also write a static int8 model")
    p.add_argument("-o", "--out", help="the .onnx file (default: beside the checkpoint)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the test-set checks (parity, int8's accuracy)")  # fmt: skip
    _data_args(p, dataset=False)


def _add_feedback_commands(sub: argparse._SubParsersAction) -> None:
    """`correct` and `feedback list|stats|export|delete`: the corrections users make."""
    p = sub.add_parser(
        "correct",
        help="say which digit an image really is (kept for `digitrec learn`)",
        description="Predict IMAGE, then keep it with the digit it really is in the "
        "corrections store, as the page's and the window's 'Wrong? It is a ...' do.",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("label", type=_digit, metavar="LABEL", help="the digit it is, 0 to 9")
    p.add_argument("--model-path", help="checkpoint or run (default: the usual resolution)")
    p.add_argument("--runs-dir")
    _feedback_arg(p)
    _backend_arg(p)
    fb = sub.add_parser("feedback", help="the corrections collected: list, stats, export, delete")
    fsub = fb.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)
    for name, text in (("list", "every record, oldest first"), ("stats", "how many, of what")):
        p = fsub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true")
        _feedback_arg(p)
    p = fsub.add_parser("export", help="a PNG per record in DIR/<label>/, originals, a CSV")
    p.add_argument("out", metavar="DIR")
    _feedback_arg(p)
    p = fsub.add_parser("delete", help="remove records for good")
    p.add_argument("ids", nargs="+", type=int, metavar="ID")
    _feedback_arg(p)


def _add_learn_commands(sub: argparse._SubParsersAction) -> None:
    """`learn` and `model list|activate|rollback`: the corrections made into a model."""
    p = sub.add_parser(
        "learn",
        help="fine-tune the model in use on the corrections; promote it if it passes the gate",
        description="Fine-tune the model in use on the corrections collected (one in five, "
        "by its hash, held out) mixed with a replay of the training split, then compare it "
        "with the model it would replace. It becomes the registry's next active version "
        "only if validation accuracy falls by 0.1 point at most, the held-out corrections "
        "improve and no canary falls by more than 0.5 point; else it is refused, saying why.",
    )
    p.add_argument("--dry-run", action="store_true", help="report, never promote")
    p.add_argument("--epochs", type=int, help="passes over the corrections and the replay")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-path", help="the model to start from (default: the usual resolution)")
    p.add_argument("--runs-dir")
    p.add_argument("--device", default="auto")
    _feedback_arg(p)
    _data_args(p, dataset=False)
    m = sub.add_parser("model", help="the model registry: list, activate VERSION, rollback")
    msub = m.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    msub.add_parser("list", help="every version (0: the shipped model), the active one marked")
    p = msub.add_parser("activate", help="make VERSION the model predict, serve and gui use")
    p.add_argument("version", type=int, metavar="VERSION")
    msub.add_parser("rollback", help="back to the version active before this one")


def _digit(text: str) -> int:
    if text not in [str(d) for d in range(10)]:
        raise argparse.ArgumentTypeError(f"{text!r}: give the digit it is, 0 to 9")
    return int(text)


def _feedback_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feedback-url", help="the corrections store: a SQLite file or "
                   "postgresql://... (default $DIGITREC_FEEDBACK_URL, else "
                   "feedback.sqlite3 in ~/.local/share/digitrec)")  # fmt: skip


def _backend_arg(p: argparse.ArgumentParser) -> None:
    from digitrec.predictor import BACKENDS

    p.add_argument(
        "--backend", choices=BACKENDS, default="auto",
        help="inference on PyTorch or ONNX Runtime; auto: ONNX Runtime when the model has "
        "an up-to-date export beside it (digitrec export); int8: its int8 copy "
        "(digitrec export --quantize int8), fastest in batches",
    )  # fmt: skip


# ------------------------------------------------------------------------ commands


def cmd_data(args) -> int:
    from digitrec import data, plots

    spec = data.get_spec(args.dataset)
    root = data.resolve_data_dir(args.data_dir)
    if args.data_command == "download":
        missing = [k for k in data.FILE_KINDS if data.find_file(spec, k, root) is None]
        if missing:
            data.download(spec, root, missing, mirrors=args.mirror)
        ds = data.load_dataset(spec.name, root, download_missing=False)
        print(f"{spec.title}: all files present and verified in {root / spec.name}")
        return 0
    ds = data.load_dataset(spec.name, root)
    if args.data_command == "verify":
        print(f"{spec.title}")
        for kind, f in ds.files.items():
            print(f"  {kind:<13} ok ({f['verified']})  {f['path']}")
        print(f"  train {len(ds.train_labels)} images, test {len(ds.test_labels)} images")
        tr = ds.train_labels.bincount(minlength=10).tolist()
        te = ds.test_labels.bincount(minlength=10).tolist()
        width = max(5, *(len(c) for c in spec.classes))
        print(f"  {'class':<{width}}  {'train':>6}  {'test':>6}")
        for c, a, b in zip(spec.classes, tr, te, strict=True):
            print(f"  {c:<{width}}  {a:>6}  {b:>6}")
        return 0
    import torch

    out = Path(args.out)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(ds.train_images), generator=g)[:50]
    plots.image_grid(
        ds.train_images[idx].numpy(),
        [spec.classes[int(ds.train_labels[i])] for i in idx],
        out / "samples.png",
        suptitle=f"{spec.title}: 50 random training images",
    )
    plots.class_distribution(
        {
            "train": ds.train_labels.bincount(minlength=10).tolist(),
            "test": ds.test_labels.bincount(minlength=10).tolist(),
        },
        spec.classes,
        out / "classes.png",
    )
    print(f"wrote {out / 'samples.png'} and {out / 'classes.png'}")
    return 0


def cmd_models(args) -> int:
    from digitrec.models import MODELS, build_model, count_parameters, describe

    print(f"{'model':<6} {'parameters':>10}  description")
    for name in MODELS:
        print(f"{name:<6} {count_parameters(build_model(name)):>10,}  {describe(name)}")
    return 0


def cmd_train(args) -> int:
    from digitrec import data, runs
    from digitrec.models import resolve_device
    from digitrec.recipes import TrainConfig, make_config
    from digitrec.train import init_checkpoint, train, use_bfloat16

    if args.resume:
        run_dir = runs.resolve_run(args.resume, runs.runs_root(args.runs_dir))
        cfg = TrainConfig.from_dict(runs.read_config(run_dir)["settings"])
    else:
        # Every setting that has a flag: a new setting cannot be silently ignored.
        names = {f.name for f in fields(TrainConfig)} - {"model", "recipe"}
        overrides = {k: getattr(args, k) for k in names if hasattr(args, k)}
        if args.init:  # a run's name is looked for under --runs-dir, as everywhere else
            overrides["init"] = str(
                runs.resolve_checkpoint(args.init, runs.runs_root(args.runs_dir))
            )
        cfg = make_config(args.recipe, args.model, overrides)
    ds = data.load_dataset(cfg.dataset, args.data_dir)
    if not args.resume:
        # Refused before a run directory is made for them: a bad start or split.
        if cfg.init:
            init_checkpoint(cfg, list(ds.spec.classes))
        data.split_indices(len(ds.train_images), cfg.val_size, cfg.split_seed)
        if args.out:
            run_dir = Path(args.out)
            runs.refuse_existing(run_dir)  # at once; train() checks again under the lock
            run_dir.mkdir(parents=True, exist_ok=True)
        else:
            run_dir = runs.new_run_dir(runs.runs_root(args.runs_dir), cfg.model)
        bf16 = use_bfloat16(cfg.precision, resolve_device(cfg.device))
        print(
            f"run {run_dir}: {cfg.model} on {cfg.dataset}, recipe {cfg.recipe}, "
            f"{cfg.epochs} epochs, seed {cfg.seed}" + (", bfloat16 autocast" if bf16 else "")
        )
    result = train(cfg, ds, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    took = f"{result.train_seconds:.1f}s of training"
    done = (
        f"best validation accuracy {result.best_val_acc:.4f} in {took}"
        if result.best_val_acc is not None
        else f"{took}, no validation split (the last epoch is the checkpoint)"
    )
    print(f"done: {done}. Checkpoints in {run_dir}\nnext: digitrec evaluate {run_dir}")
    return 0


def cmd_ensemble(args) -> int:
    from digitrec import runs
    from digitrec.ensemble import make_ensemble

    root = runs.runs_root(args.runs_dir)
    if args.out:
        run_dir = Path(args.out)
        runs.refuse_existing(run_dir, "choose another --out")
    else:
        run_dir = runs.new_run_dir(root, "average" if args.average else "ensemble")
    try:
        r = make_ensemble(args.members, run_dir, args.data_dir, root, args.average, args.weights)
    except BaseException:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # no empty run left behind by a refused ensemble
        raise

    def pct(v: float | None) -> str:
        return f"{v:.2%}" if v is not None else "-"

    for m, acc in zip(args.members, r.member_val_accs, strict=True):
        print(f"  member {m}: validation accuracy {pct(acc)}")
    what = "weight average" if args.average else "ensemble"
    print(f"{what} of {len(args.members)} in {run_dir}: validation accuracy {pct(r.val_acc)}")
    print(f"({r.note})\nnext: digitrec evaluate {run_dir}")
    return 0


def cmd_runs(args) -> int:
    from digitrec.runs import choose_model, list_runs, runs_root

    root = runs_root(args.runs_dir)
    rows = list_runs(root)
    if not rows:
        print(f"No runs yet in {root.resolve()} (--runs-dir or $DIGITREC_RUNS_DIR look "
              "elsewhere). `digitrec train` starts one; meanwhile predict, serve and gui use "
              "the model shipped with digitrec.")  # fmt: skip
        return 0

    def pct(v: float | None) -> str:
        return f"{v:.2%}" if v is not None else "-"

    print(
        f"{'run':<34} {'model':<8} {'data':<13} {'epochs':>6} {'val acc':>8} {'test acc':>8} "
        f"{'params':>9} {'train s':>8}  status"
    )
    for r in rows:
        if r.damaged:
            print(f"{r.path.name:<34} damaged: {r.damaged}")
            continue
        print(
            f"{r.path.name:<34} {r.model:<8} {r.dataset:<13} {r.epochs:>6} {pct(r.val_acc):>8} "
            f"{pct(r.test_acc):>8} {r.params:>9,} {r.train_seconds:>8.1f}  {r.status}"
        )
    print(f"\npredict, serve and gui use {choose_model(None, args.runs_dir).why}")
    return 0


def cmd_calibrate(args) -> int:
    from digitrec import runs
    from digitrec.calibration import calibrate_checkpoint

    root = runs.runs_root(args.runs_dir)
    path, c, exports = calibrate_checkpoint(args.target, args.data_dir, args.max_risk, root)
    v = c["val"]
    print(f"{path}: temperature {c['temperature']:.4f}; on its {c['images']} validation "
          f"images ECE {v['ece_before']:.4f} -> {v['ece_after']:.4f}, NLL "
          f"{v['nll_before']:.4f} -> {v['nll_after']:.4f}")  # fmt: skip
    print(f"'not sure' below {c['uncertain_below']:.4f}: answers {v['coverage']:.2%} of them "
          f"with {v['risk']:.2%} wrong (at most {c['max_risk']:.2%} asked)")  # fmt: skip
    for e in exports:
        print(f"exported again: {e}")
    return 0


def cmd_evaluate(args) -> int:
    from digitrec import data, runs
    from digitrec.checkpoint import load_model
    from digitrec.evaluate import evaluate
    from digitrec.models import resolve_device

    ckpt = runs.resolve_checkpoint(args.target, runs.runs_root(args.runs_dir))
    if ckpt.name == "best.safetensors" and not Path(args.target).is_file():  # a run
        # The plain report stays where `digitrec runs` reads it; TTA's goes beside it.
        out = ckpt.parent / "tta" if args.tta else ckpt.parent
    else:  # a checkpoint's beside it would be inside the package for the shipped one
        name = runs.SHIPPED if ckpt == runs.shipped_model_path() else ckpt.stem
        out = Path("reports") / (name + ("-tta" if args.tta else ""))
    out = Path(args.out) if args.out else out
    model, meta = load_model(ckpt, resolve_device(args.device))
    ds = data.load_dataset(meta.get("dataset", "mnist"), args.data_dir)
    r = evaluate(model, meta, ds, out, source=str(ckpt), tta=args.tta)
    print(
        f"{meta['model']} on {ds.spec.name} test{' with TTA' if args.tta else ''}: "
        f"accuracy {r['accuracy']:.4f} "
        f"({r['errors']} errors in {r['images']}), loss {r['loss']:.4f}, ECE {r['ece']:.4f}"
    )
    n = r["not_sure"]
    print(
        f"'not sure' below {n['threshold']:.4f}"
        + ("" if n["measured"] else " (not calibrated: `digitrec calibrate`)")
        + f": answers {n['coverage']:.2%} of the test images, {n['risk']:.2%} of them wrong"
    )
    print(
        "most confused (true -> predicted): "
        + ", ".join(f"{p['true']}->{p['predicted']} x{p['count']}" for p in r["most_confused"][:5])
    )
    print(f"report: {out / 'report.html'}")
    return 0


def cmd_predict(args) -> int:
    from digitrec.predictor import Predictor

    if args.random is not None and args.random < 1:  # a negative slice took all but N
        raise DigitrecError(f"--random {args.random}: give a number of test images, 1 or more")
    if not args.images and not args.random:
        raise DigitrecError("give image files to predict, or --random N for test images")
    files = image_files(args.images, args.recursive)  # a wrong folder fails before loading
    predictor = Predictor.load(
        args.model_path, args.runs_dir, device=args.device, backend=args.backend
    )
    if not args.json:
        acc = predictor.meta.get("test_accuracy")
        print(
            f"model: {predictor.name} ({predictor.source}: {predictor.path}, {predictor.backend})"
            + (f", test accuracy {acc:.2%}" if acc else "")
        )
    if args.random:
        return _predict_random(predictor, args)
    from digitrec.reading import read

    results: list[dict] = []
    for path, pred in per_file(files, lambda f: predictor.predict_one(f, tta=args.tta),
                               results, args.json):  # fmt: skip
        top3 = [{"label": predictor.classes[d], "probability": p} for d, p in pred.top(3)]
        results.append({"file": path, **pred.to_dict(), "top3": top3})
        text = "" if pred.blank else read(predictor, path).text
        if args.json and not pred.blank:
            results[-1]["read"] = text
        if args.json:
            continue
        number = text.replace("\n", "")
        if pred.blank:
            print(f"{path}: no digit found (the image is blank or nearly blank)")
        elif pred.not_a_digit and len(number) <= 1:
            print(f"{path}: not a digit (it looks like none of 0-9: a scribble, a letter, ...)")
        elif pred.not_a_digit:  # a number squeezed into one digit's box is no digit
            print(f"{path}: not one digit")
        else:
            top = ", ".join(f"{predictor.classes[d]} {p:.1%}" for d, p in pred.top(3))
            flag = f"  (not sure: {pred.candidates(predictor.classes)})" if pred.uncertain else ""
            print(f"{path}: {pred.label}  top-3: {top}{flag}")
        if len(number) > 1:
            print(f"  this image holds more than one digit ({number!r}): "
                  f"`digitrec read {path}` reads them all")  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if any("error" in r for r in results) else 0


def per_file(
    files: list[str], work: Callable[[str], Any], records: list[dict], quiet: bool
) -> Iterator[tuple[str, Any]]:
    """Each file with ``work`` done on it; an unreadable one recorded in ``records`` and,
    unless ``quiet``, reported, and the rest go on."""
    from digitrec.errors import ImageError

    for path in files:
        try:
            result = work(path)
        except ImageError as exc:
            records.append({"file": path, "error": str(exc)})
            if not quiet:
                print(f"error: {exc}")
            continue
        yield path, result


def cmd_read(args) -> int:
    from digitrec.predictor import Predictor
    from digitrec.reading import read

    files = image_files(args.images, args.recursive)
    predictor = Predictor.load(args.model_path, args.runs_dir, backend=args.backend)
    records: list[dict] = []
    for path, r in per_file(files, lambda f: read(predictor, f), records, args.json):
        records.append({"file": path, **r.to_dict()})
        if args.json:
            continue
        head = f"{path}: " if len(files) > 1 else ""
        if r.blank:
            print(f"{head}no digits found (the image is blank or nearly blank)")
            continue
        flag = "  (not sure)" if r.uncertain else ""
        first, *rest = r.text.split("\n")
        print(f"{head}{first}{flag}")
        for line in rest:
            print(" " * len(head) + line)
    if args.json:
        print(json.dumps(records, indent=2))
    return 1 if any("error" in r for r in records) else 0


def _companion_out(args, kind: str) -> tuple[Path, Path, str]:
    """The digit model (and where it came from) and where its companion ``kind`` goes:
    refused now, not after the training, when it exists (without --force) or cannot be
    written."""
    from digitrec.runs import reading_model_path, resolve_model_path

    base, source = resolve_model_path(args.model_path, args.runs_dir)
    if base.suffix != ".safetensors":
        raise DigitrecError(f"{base}: give the .safetensors checkpoint, not an export")
    out = Path(args.out) if args.out else reading_model_path(base, kind)
    if out.exists() and not args.force:
        raise DigitrecError(f"{out} already exists; pass --force to replace it or --out elsewhere")
    parent = next(p for p in out.resolve().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise DigitrecError(f"--out {out}: {parent} is not a writable directory")
    return base, out, source


def cmd_train_reader(args) -> int:
    from digitrec.reading_model import train_reading_model

    if args.numbers < 1 or args.epochs <= 0:
        raise DigitrecError("--numbers must be at least 1 and --epochs above 0")
    base, out, source = _companion_out(args, "reader")
    print(f"base: {base} ({source})")
    got = train_reading_model(base, out, args.numbers, args.epochs, args.seed, args.device,
                              args.data_dir)  # fmt: skip
    before, after = got["validation_before"], got["validation"]
    print(f"\n{'validation':<34} {'base':>8} {'reader':>8}")
    print(f"{'digits read right':<34} {before['digits_acc']:>8.2%} {after['digits_acc']:>8.2%}")
    print(f"{'digits called none':<34} {'':>8} {after['digits_none']:>8.2%}")
    for name, key in (("number crops labelled right", "crops_acc"),
                      ("  of them none, called none", "crops_none_recall")):  # fmt: skip
        v = after[key]
        print(f"{name:<34} {'':>8} {'no crops' if v != v else f'{v:.2%}':>8}")
    print(f"\nwrote {out}; `digitrec export {out}` makes its ONNX copy")
    return 0


def cmd_train_lines(args) -> int:
    from digitrec.line_model import train_line_model

    if args.lines < 1 or args.epochs <= 0 or args.workers < 1:
        raise DigitrecError("--lines and --workers must be at least 1 and --epochs above 0")
    base, out, _ = _companion_out(args, "lines")
    print(f"for: {base}")
    got = train_line_model(out, args.lines, args.epochs, args.seed, args.device,
                           args.data_dir, args.workers)  # fmt: skip
    val = got["validation"]
    print(
        f"\nvalidation ({val['lines']} lines of validation-split digits): lines read "
        f"exactly {val['lines_exact']:.2%}, digits in place {val['digits_in_place']:.2%}"
    )
    print(f"wrote {out}")
    return 0


def cmd_train_notdigit(args) -> int:
    from digitrec.notdigit import train_notdigit_model

    if min(args.digits, args.junk, args.workers) < 1 or args.epochs <= 0:
        raise DigitrecError("--digits, --junk and --workers must be at least 1, --epochs above 0")
    base, out, _ = _companion_out(args, "notdigit")
    print(f"for: {base}")
    got = train_notdigit_model(out, args.digits, args.junk, args.epochs, args.seed, args.device,
                               args.data_dir, args.skip or "", args.workers)  # fmt: skip
    val = got["validation"]
    print(f"\nvalidation, flagged 'not a digit' (threshold {got['threshold']:.3f}):")
    for key, share in val.items():
        name = key.removesuffix("_flagged")
        unseen = " (never trained on)" if name == args.skip else ""
        print(f"  {name + unseen:<32} {share:>7.2%}")
    print(f"wrote {out}")
    return 0


def image_files(args: list[str], recursive: bool = False) -> list[str]:
    """The arguments, with each folder replaced by the images in it (by name; its
    subfolders' too with ``recursive``). What a folder holds that is not read is said, on
    stderr; a folder without any image is an error: predicting nothing would look like
    success."""
    from digitrec.preprocess import IMAGE_SUFFIXES

    files = []
    for arg in args:
        if not Path(arg).is_dir():
            files.append(arg)  # a missing or unreadable file is reported in its turn
            continue
        found, skipped = _folder_images(Path(arg), recursive, IMAGE_SUFFIXES)
        if skipped:
            print(f"{arg}: skipped {len(skipped)}: {'; '.join(skipped)}", file=sys.stderr)
        if not found:
            raise DigitrecError(
                f"{arg}: a folder with no images in it ({', '.join(IMAGE_SUFFIXES)})"
            )
        files += found
    return files


def _folder_images(
    folder: Path, recursive: bool, suffixes: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """The images in ``folder`` by name, and what was skipped, each with why."""
    entries = sorted(folder.rglob("*") if recursive else folder.iterdir())
    found, folders, others = [], [], []
    for f in entries:
        if f.is_dir():
            folders.append(f)
        elif f.suffix.lower() in suffixes and f.is_file():
            found.append(str(f))
        else:
            others.append(f)
    skipped = []
    if others:
        names = ", ".join(str(f.relative_to(folder)) for f in others[:5])
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        skipped.append(f"{len(others)} not an image by name ({names}{more})")
    if folders and not recursive:
        names = ", ".join(f.name + "/" for f in folders[:5])
        more = f" and {len(folders) - 5} more" if len(folders) > 5 else ""
        skipped.append(f"{len(folders)} folder{'s' * (len(folders) > 1)} ({names}{more}): "
                       "--recursive reads them too")  # fmt: skip
    return found, skipped


def _predict_random(predictor, args) -> int:
    import torch

    from digitrec import data, plots

    ds = data.load_dataset(predictor.meta.get("dataset", "mnist"), args.data_dir)
    n = min(args.random, len(ds.test_images))
    idx = torch.randperm(len(ds.test_images), generator=torch.Generator().manual_seed(args.seed))[
        :n
    ]
    probs = predictor.probabilities(data.to_float(ds.test_images[idx]), tta=args.tta)
    conf, pred = probs.max(1)
    truth = ds.test_labels[idx]
    correct = pred == truth
    cls = predictor.classes
    rows = [
        {"index": int(i), "true": cls[int(t)], "predicted": cls[int(p)], "confidence": float(c)}
        for i, t, p, c in zip(idx, truth, pred, conf, strict=True)
    ]
    # A readable page, not all N: 3,000 images took two minutes and 2.4 GB to draw.
    # Past GRID_MAX, the mistakes come first.
    shown = list(range(n))
    if n > GRID_MAX:
        shown = sorted(shown, key=lambda i: bool(correct[i]))[:GRID_MAX]
    title = f"predicted (true): {int(correct.sum())}/{n} correct"
    plots.image_grid(
        ds.test_images[idx[shown]].numpy(),
        [f"{rows[i]['predicted']} ({rows[i]['true']})" for i in shown],
        args.grid,
        colors=["tab:green" if correct[i] else "tab:red" for i in shown],
        suptitle=title + (f"; {len(shown)} shown, mistakes first" if n > GRID_MAX else ""),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "accuracy": correct.float().mean().item(),
                    "predictions": rows,
                    "grid": str(args.grid),
                    "grid_shows": [rows[i]["index"] for i in shown],
                },
                indent=2,
            )
        )
        return 0
    for r, ok in zip(rows, correct.tolist(), strict=True):
        mark = "ok" if ok else "WRONG"
        print(
            f"test #{r['index']:<5} true {r['true']}  predicted {r['predicted']} "
            f"({r['confidence']:.1%})  {mark}"
        )
    print(
        f"accuracy {correct.float().mean().item():.2%} ({int(correct.sum())}/{n}); "
        f"grid: {args.grid}" + (f" ({len(shown)} of them, mistakes first)" if n > GRID_MAX else "")
    )
    return 0


def cmd_serve(args) -> int:
    from digitrec.web.server import serve

    serve(args.host, args.port, args.model_path, args.workers, args.backend, args.feedback_url)
    return 0


def cmd_gui(args) -> int:
    from digitrec.gui import run

    run(args.model_path, args.runs_dir, args.image, args.backend, args.feedback_url)
    return 0


def cmd_export(args) -> int:
    from digitrec.export import export

    scored = export(args.model, args.out, args.quantize, not args.no_check, args.data_dir)
    print(f"{'model':<14} {'file':<44} {'size':>9} {'test acc':>9} {'same digit':>10} "
          f"{'max |dp|':>9}")  # fmt: skip
    for s in scored:
        same = "" if s.agreement is None else f"{s.agreement:.2%}"
        diff = "" if s.max_diff is None else f"{s.max_diff:.1e}"
        acc = "" if s.accuracy != s.accuracy else f"{s.accuracy:.2%}"  # NaN: not checked
        print(f"{s.name:<14} {s.path!s:<44} {s.size / 1e6:>7.2f}MB {acc:>9} {same:>10} "
              f"{diff:>9}")  # fmt: skip
    return 0


def cmd_correct(args) -> int:
    from digitrec.feedback import FeedbackStore, correction_of
    from digitrec.predictor import Predictor

    store = FeedbackStore(args.feedback_url)
    original = _image_bytes(args.image)
    predictor = Predictor.load(args.model_path, args.runs_dir, backend=args.backend)
    pred = predictor.predict_one(original)
    record_id, new = store.add(correction_of(pred, args.label, predictor.sha256, "cli", original))
    said = f"{pred.digit} ({pred.confidence:.0%})" if pred.digit is not None else "no digit"
    said = "not a digit" if pred.not_a_digit else said
    verb = "confirmed" if pred.digit == args.label else "corrected"
    again = "" if new else ", which was stored before: its label is now this one"
    print(f"{args.image}: {verb} as a {args.label} (the model said {said}); "
          f"record #{record_id} in {store.where}{again}")  # fmt: skip
    return 0


def _image_bytes(path: str) -> bytes:
    from digitrec.preprocess import MAX_IMAGE_BYTES, over_limit

    p = Path(path)
    if not p.is_file():
        raise DigitrecError(f"{path}: no such file")
    if (size := p.stat().st_size) > MAX_IMAGE_BYTES:
        raise DigitrecError(over_limit(path, size, MAX_IMAGE_BYTES))
    return p.read_bytes()


def cmd_feedback(args) -> int:
    from digitrec import feedback

    store = feedback.FeedbackStore(args.feedback_url)
    if args.feedback_command == "delete":
        if missing := set(args.ids) - {r.id for r in store.records(args.ids)}:
            raise DigitrecError(f"no correction #{min(missing)} in {store.where}: nothing deleted")
        for record_id in args.ids:
            store.delete(record_id)
        print(f"deleted {len(args.ids)} record(s) from {store.where}")
        return 0
    records = store.records()
    if args.feedback_command == "export":
        n = feedback.export(records, Path(args.out))
        print(f"exported {n} record(s) from {store.where} to {args.out}")
    elif args.json:
        summaries = [r.summary() for r in records]
        print(json.dumps(summaries if args.feedback_command == "list" else feedback.stats(records),
                         indent=2))  # fmt: skip
    elif args.feedback_command == "list":
        print(feedback.listing(records) if records else f"no corrections in {store.where}")
    else:
        print(f"{store.where}:")
        for key, value in feedback.stats(records).items():
            print(f"  {key.replace('_', ' ')}: {value}")
    return 0


def cmd_learn(args) -> int:
    from digitrec.feedback import FeedbackStore
    from digitrec.learn import EPOCHS, learn, table

    if args.epochs is not None and args.epochs < 1:
        raise DigitrecError(f"--epochs {args.epochs}: give 1 or more passes")
    out = learn(FeedbackStore(args.feedback_url), args.model_path, args.runs_dir, args.data_dir,
                epochs=args.epochs or EPOCHS, seed=args.seed, device=args.device,
                dry_run=args.dry_run)  # fmt: skip
    print(table(out))
    print(f"trained on {out.trained_on} corrections and {out.replay:,} replayed digits in "
          f"{out.seconds:.0f} s; the candidate: {out.run}")  # fmt: skip
    if out.refused:
        print("refused: " + "; ".join(out.refused))
        return 1
    if out.promoted is None:
        print("passed the gate; --dry-run: not promoted")
    else:
        print(f"promoted: version {out.promoted.number} is active now "
              "(`digitrec model rollback` undoes it)")  # fmt: skip
    return 0


def cmd_model(args) -> int:
    from digitrec import registry

    if args.model_command == "activate":
        v = registry.activate(args.version)
        print(f"version {v.number} is active now: {v.path}")
    elif args.model_command == "rollback":
        v = registry.rollback()
        print(f"rolled back: version {v.number} is active now: {v.path}")
    else:
        current = registry.active()
        none = " (no active version: the usual resolution applies)"
        print(f"registry: {registry.registry_root()}" + ("" if current else none))
        for v in registry.versions():
            mark = "*" if current and current.number == v.number else " "
            acc = (v.record.get("metrics") or {}).get("after", {}).get("validation")
            scored = f"validation {100 * acc:.2f}%  " if acc else ""
            made = v.record.get("created", "")
            print(f"{mark} {v.number:>3}  {made:<24}  {scored}{v.record.get('why', '')}")
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "gui": cmd_gui,
    "export": cmd_export,
    "data": cmd_data,
    "models": cmd_models,
    "train": cmd_train,
    "ensemble": cmd_ensemble,
    "runs": cmd_runs,
    "evaluate": cmd_evaluate,
    "calibrate": cmd_calibrate,
    "predict": cmd_predict,
    "read": cmd_read,
    "train-reader": cmd_train_reader,
    "train-lines": cmd_train_lines,
    "train-notdigit": cmd_train_notdigit,
    "correct": cmd_correct,
    "feedback": cmd_feedback,
    "learn": cmd_learn,
    "model": cmd_model,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    except DigitrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
