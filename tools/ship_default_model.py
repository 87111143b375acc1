"""Retrain the model shipped inside the package, with digitrec's own commands.

Runs `digitrec train` with the recipe below, evaluates the chosen checkpoint on
the test set once, and copies it to src/digitrec/assets/default.safetensors with
its command line, validation metrics and test accuracy in the metadata; the
run's full config and the report summary go beside it in default.json.
Model selection happened on the validation split inside `train`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from digitrec.checkpoint import copy_with_meta, read_meta
from digitrec.files import write_json

TRAIN_ARGS = ["--recipe", "fast", "--augment", "--epochs", "8", "--seed", "0", "--device", "cpu"]
ASSETS = Path(__file__).resolve().parents[1] / "src" / "digitrec" / "assets"


def digitrec(*args: str) -> None:
    print("$ digitrec " + shlex.join(args), flush=True)
    subprocess.run([sys.executable, "-m", "digitrec", *args], check=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "default-model"
        digitrec("train", *TRAIN_ARGS, "--out", str(run), "--no-progress")
        digitrec("evaluate", str(run))
        report = json.loads((run / "report.json").read_text())
        config = json.loads((run / "config.json").read_text())
        meta = read_meta(run / "best.safetensors")
        command = "digitrec train " + shlex.join(TRAIN_ARGS)
        extra = {"command": command, "test_accuracy": report["accuracy"], "shipped": True}
        copy_with_meta(run / "best.safetensors", ASSETS / "default.safetensors", extra)
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
