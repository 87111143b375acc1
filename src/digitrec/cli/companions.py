"""The models beside a digit model: train-reader, train-lines, train-notdigit."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from digitrec.cli.args import data_args
from digitrec.errors import DigitrecError


def add(sub: argparse._SubParsersAction) -> None:
    _add_companion_commands(sub)


def _add_companion_commands(sub: argparse._SubParsersAction) -> None:
    """`train-reader`, `train-lines`, `train-notdigit`: the models beside a digit model."""
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
    data_args(p, dataset=False)


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


COMMANDS = {
    "train-reader": cmd_train_reader,
    "train-lines": cmd_train_lines,
    "train-notdigit": cmd_train_notdigit,
}
