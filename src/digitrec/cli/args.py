"""The flags several commands share, each written once."""

from __future__ import annotations

import argparse


def data_args(p: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        p.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    p.add_argument("--data-dir", help="dataset directory (default $DIGITREC_DATA_DIR or cache)")


def digit(text: str) -> int:
    if text not in [str(d) for d in range(10)]:
        raise argparse.ArgumentTypeError(f"{text!r}: give the digit it is, 0 to 9")
    return int(text)


def feedback_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feedback-url", help="the corrections store: a SQLite file or "
                   "postgresql://... (default $DIGITREC_FEEDBACK_URL, else "
                   "feedback.sqlite3 in ~/.local/share/digitrec)")  # fmt: skip


def backend_arg(p: argparse.ArgumentParser) -> None:
    from digitrec.predictor import BACKENDS

    p.add_argument(
        "--backend", choices=BACKENDS, default="auto",
        help="inference on PyTorch or ONNX Runtime; auto: ONNX Runtime when the model has "
        "an up-to-date export beside it (digitrec export); int8: its int8 copy "
        "(digitrec export --quantize int8), fastest in batches",
    )  # fmt: skip
