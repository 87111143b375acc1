"""Remake the model shipped inside the package, with digitrec's own commands.

The shipped model is made in three steps (see STEPS): the `best` recipe from scratch;
that model fine-tuned on what real input has and MNIST lacks (outlined strokes, stray
lines, warps, wider rotations); and the weight average of the two, which keeps the
first one's accuracy on clean digits and most of the second one's on corrupted ones
(chosen on the validation split and its robustness renders). The average is then
evaluated on the test set once, copied to src/digitrec/assets/default.safetensors with
the commands, validation metrics and test accuracy in its metadata, described in
default.json, and exported to ONNX beside it, float32 and int8 (parity-checked). Last,
its reading model for whole numbers (`digitrec train-reader`, default.reader.safetensors)
is made from it and exported beside it, and the line model for touching digits
(`digitrec train-lines`, default.lines.safetensors) is trained beside them.

    python tools/ship_default_model.py [--base RUN|CHECKPOINT] [--to DIR [--limit N]]
                                       [--lines FILE]

--base reuses a finished first step, a run or its checkpoint, instead of training it
again (about 20 minutes on 2 CPU cores). The shipped model itself is the average, not a
first step; the base it was made from is the file shipped before it:

    git show 87b4f92:src/digitrec/assets/default.safetensors > base.safetensors

--to writes the seven files elsewhere; with it, --limit N trains each step one epoch on N
images: a quick check that the chain runs, never a model to ship. --lines FILE reuses a
line model (trained from scratch, it owes nothing to the digit model) instead of the
half hour of training one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from pathlib import Path

from digitrec import cli
from digitrec.checkpoint import copy_with_meta, read_meta
from digitrec.errors import CheckpointError
from digitrec.files import write_bytes, write_json
from digitrec.models import LINE_MODEL
from digitrec.runs import read_config, reading_model_path, resolve_checkpoint

ASSETS = Path(__file__).resolve().parents[1] / "src" / "digitrec" / "assets"
# In float32, as the shipped model was trained (before --precision existed, its commands
# meant that on a CPU): bfloat16 would make another model, not a better one.
BASE = ["train", "--recipe", "best", "--epochs", "10", "--seed", "0", "--device", "cpu",
        "--precision", "fp32"]  # fmt: skip
TUNE = ["train", "--recipe", "best", "--init", "base", "--epochs", "3", "--lr", "1e-3",
        "--seed", "1", "--rotate", "15", "--elastic", "0.3", "--strays", "0.1",
        "--outline", "0.1", "--device", "cpu", "--precision", "fp32"]  # fmt: skip
AVERAGE = ["ensemble", "base", "tuned", "--average"]


def digitrec(*args: str) -> None:
    """One step, through the CLI's own entry point (in this process: no interpreter and
    torch to start again for each of the nine steps)."""
    print("$ digitrec " + shlex.join(args), flush=True)
    if (code := cli.main(list(args))) != 0:
        raise SystemExit(f"`digitrec {shlex.join(args)}` failed (exit code {code})")


def command(args: list[str]) -> str:
    return "digitrec " + shlex.join(args)


def portable(cmd: str) -> str:
    """A recorded command without where it wrote (``--out``, ``--runs-dir``) or how it
    showed progress: the chain names each step's output itself."""
    words, out = shlex.split(cmd), []
    while words:
        w = words.pop(0)
        if w in ("--out", "--runs-dir"):
            words = words[1:]
        elif not w.startswith(("--out=", "--runs-dir=", "--no-progress")):
            out.append(w)
    return shlex.join(out)


def is_line_model(path: Path) -> bool:
    try:
        return path.is_file() and read_meta(path).get("model") == LINE_MODEL
    except CheckpointError:  # not a readable safetensors file
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="a finished first step to reuse (a run or a checkpoint)")
    ap.add_argument("--to", type=Path, default=ASSETS, help="where to write (default: %(default)s)")
    ap.add_argument("--limit", type=int, help="with --to: one epoch on N images per step")
    ap.add_argument(
        "--lines",
        type=Path,
        help="a line model to reuse instead of training one (it owes nothing to the digit "
        "model: trained from scratch by `digitrec train-lines`)",
    )
    args = ap.parse_args()
    if args.limit and args.to.resolve() == ASSETS:
        ap.error("--limit makes a model for a quick check: give --to, not the package's assets")
    if not args.to.is_dir():
        ap.error(f"--to {args.to}: no such directory")
    if args.lines is not None and not is_line_model(args.lines):
        ap.error(f"--lines {args.lines}: not a line model")
    # A quick chain validates on 500 images: the steps score and calibrate on it.
    quick = ["--limit", str(args.limit), "--epochs", "1", "--val-size", "500"] if args.limit else []
    base_steps, tune_steps = [*BASE, *quick], [*TUNE, *quick]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.base:
            base = resolve_checkpoint(args.base)
            meta = read_meta(base)
            if meta.get("members"):  # its command would be recorded for other weights
                raise SystemExit(f"{base} is an average of models, not a first step: see --help")
            # Its run's config.json, or (a bare checkpoint) the record of the shipped base.
            shipped = json.loads((ASSETS / "default.json").read_text()).get("base", {})
            if (base.parent / "config.json").is_file():
                base_config = read_config(base.parent)
            elif meta.get("run") == shipped.get("run"):
                base_config = shipped
            else:
                raise SystemExit(f"{base}: no config.json beside it to record its settings")
            base_command = portable(base_config.get("command", ""))
            if not base_command.startswith("digitrec train "):
                raise SystemExit(f"{base} does not record the command that trained it")
        else:
            digitrec(*base_steps, "--out", str(work / "base"), "--no-progress")
            base, base_command = work / "base" / "best.safetensors", command(base_steps)
            base_config = read_config(work / "base")
        where = {"base": str(base), "tuned": str(work / "tuned")}

        def at(words: list[str]) -> list[str]:  # step names -> their files in the work dir
            return [where.get(w, w) for w in words]

        digitrec(*at(tune_steps), "--out", where["tuned"], "--no-progress")
        digitrec(*at(AVERAGE), "--out", str(work / "shipped"))

        run = work / "shipped"
        digitrec("evaluate", str(run), "--out", str(work / "report"))
        report = json.loads((work / "report" / "report.json").read_text())
        meta = read_meta(run / "best.safetensors")
        # As a chain to run in an empty directory: each step's output named as the next reads it.
        tune = command([*tune_steps, "--out", "tuned"])
        steps = [f"{base_command} --out base", tune, command(AVERAGE)]
        extra = {"command": " && ".join(steps), "test_accuracy": report["accuracy"],
                 "shipped": True}  # fmt: skip
        shipped_path = args.to / "default.safetensors"
        copy_with_meta(run / "best.safetensors", shipped_path, extra)
        # The ONNX export beside it is what the Predictor runs by default (--backend auto);
        # its int8 copy is what `--backend int8` runs (servers under load).
        # A quick chain skips the exports' parity checks on the test set (half a minute).
        unchecked = ["--no-check"] if args.limit else []
        digitrec("export", str(shipped_path), "--quantize", "int8", *unchecked)
        # Its reading model (numbers), made from it and exported beside it in turn.
        quick_reader = ["--numbers", "20", "--epochs", "0.01"] if args.limit else []
        digitrec("train-reader", "--model-path", str(shipped_path), "--force", *quick_reader)
        digitrec("export", str(reading_model_path(shipped_path)), *unchecked)
        # The line model, for lines of touching digits (trained from scratch, run by torch).
        lines_path = reading_model_path(shipped_path, "lines")
        if args.lines is None:
            quick = ["--lines", "500", "--epochs", "0.1", "--workers", "1"] if args.limit else []
            digitrec("train-lines", "--model-path", str(shipped_path), "--force", *quick)
        elif args.lines.resolve() != lines_path.resolve():
            write_bytes(lines_path, args.lines.read_bytes())
        write_json(
            args.to / "default.json",
            {
                "command": extra["command"],
                "steps": steps,
                "validation": meta["metrics"],
                "test": {k: report[k] for k in ("accuracy", "errors", "loss", "ece")},
                "config": read_config(run),
                "base": base_config,
                "tuned": read_config(work / "tuned"),
                # fitted by the average's step (`ensemble`) on the validation split
                "calibration": meta.get("calibration"),
            },
        )
    print(f"shipped {shipped_path}: test accuracy {report['accuracy']:.4f}")


if __name__ == "__main__":
    main()
