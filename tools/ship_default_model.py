"""Retrain the model shipped inside the package, with digitrec's own commands.

Runs `digitrec train` with the recipe below (or takes a finished run given with
--run, made by `digitrec train`), evaluates the chosen checkpoint on the test set
once, and copies it to src/digitrec/assets/default.safetensors with its command
line, validation metrics and test accuracy in the metadata; the run's full config
and the report summary go beside it in default.json, and its parity-checked ONNX
export in default.onnx. Model selection happened on
the validation split inside `train`.

    python tools/ship_default_model.py [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from digitrec.checkpoint import copy_with_meta, read_meta
from digitrec.files import write_json

TRAIN_ARGS = ["--recipe", "best", "--epochs", "10", "--seed", "0", "--device", "cpu"]
ASSETS = Path(__file__).resolve().parents[1] / "src" / "digitrec" / "assets"


def digitrec(*args: str) -> None:
    print("$ digitrec " + shlex.join(args), flush=True)
    subprocess.run([sys.executable, "-m", "digitrec", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="ship this finished run instead of training one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            run, train_args = Path(args.run), None
        else:
            run, train_args = Path(tmp) / "default-model", TRAIN_ARGS
            digitrec("train", *TRAIN_ARGS, "--out", str(run), "--no-progress")
        digitrec("evaluate", str(run), "--out", str(Path(tmp) / "report"))
        report = json.loads((Path(tmp) / "report" / "report.json").read_text())
        config = json.loads((run / "config.json").read_text())
        if config.get("status") != "complete":
            raise SystemExit(f"{run} is not a finished run (status {config.get('status')})")
        meta = read_meta(run / "best.safetensors")
        if train_args is None:  # the run's own command, less where it was written
            words = shlex.split(config["command"])[2:]
            for flag in ("--out", "--runs-dir"):
                if flag in words:
                    i = words.index(flag)
                    del words[i : i + 2]
            train_args = [w for w in words if w != "--no-progress"]
        command = "digitrec train " + shlex.join(train_args)
        extra = {"command": command, "test_accuracy": report["accuracy"], "shipped": True}
        copy_with_meta(run / "best.safetensors", ASSETS / "default.safetensors", extra)
        # The ONNX export beside it is what the Predictor runs by default (--backend auto).
        digitrec("export", str(ASSETS / "default.safetensors"))
        write_json(
            ASSETS / "default.json",
            {
                "command": command,
                "selected_epoch": meta["epoch"],
                "validation": meta["metrics"],
                "test": {k: report[k] for k in ("accuracy", "errors", "loss", "ece")},
                "config": config,
            },
        )
    print(f"shipped {ASSETS / 'default.safetensors'}: test accuracy {report['accuracy']:.4f}")


if __name__ == "__main__":
    main()
