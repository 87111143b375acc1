"""The ``digitrec`` command line. Each module below holds a group of commands, their
flags (``add``) and what they do (``COMMANDS``); ``args`` the flags several share.

Every subcommand reports problems it knows about as one line starting
``error:`` and exit code 2; Ctrl-C during training exits 130 after saving.
"""

from __future__ import annotations

import argparse
import sys

from digitrec.cli import apps, companions, corrections, images, workbench
from digitrec.errors import DigitrecError, Interrupted

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
                      version, else the best run if it beats the shipped model on the same
                      validation split, else the shipped model)
  DIGITREC_HOME       corrections and the model registry (default ~/.local/share/digitrec)
  DIGITREC_FEEDBACK_URL  the corrections store (default: feedback.sqlite3 in DIGITREC_HOME)
"""


GROUPS = (workbench, images, companions, apps, corrections)  # in the help's order
COMMANDS = {name: cmd for group in GROUPS for name, cmd in group.COMMANDS.items()}


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
    for group in GROUPS:
        group.add(sub)
    return parser


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
