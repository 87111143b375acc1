"""Remake the model shipped inside the package, with digitrec's own commands.

The shipped model is made in three steps (see STEPS): the `best` recipe from scratch;
that model fine-tuned on what real input has and MNIST lacks (outlined strokes, stray
lines, warps, wider rotations); and the weight average of the two, which keeps the
first one's accuracy on clean digits and most of the second one's on corrupted ones
(chosen on the validation split and its robustness renders). The average is then
evaluated on the test set once, copied to src/digitrec/assets/default.safetensors with
the commands, validation metrics and test accuracy in its metadata, described in
default.json, and exported to ONNX beside it (parity-checked).

    python tools/ship_default_model.py [--base RUN|CHECKPOINT|default]

--base reuses a finished first step (``default``: the model shipped now) instead of
training it again (about 20 minutes on 2 CPU cores).
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
from digitrec.runs import resolve_checkpoint

ASSETS = Path(__file__).resolve().parents[1] / "src" / "digitrec" / "assets"
BASE = ["train", "--recipe", "best", "--epochs", "10", "--seed", "0", "--device", "cpu"]
TUNE = ["train", "--recipe", "best", "--init", "base", "--epochs", "3", "--lr", "1e-3",
        "--seed", "1", "--rotate", "15", "--elastic", "0.3", "--strays", "0.1",
        "--outline", "0.1", "--device", "cpu"]  # fmt: skip
AVERAGE = ["ensemble", "base", "tuned", "--average"]


def digitrec(*args: str) -> None:
    print("$ digitrec " + shlex.join(args), flush=True)
    subprocess.run([sys.executable, "-m", "digitrec", *args], check=True)


def command(args: list[str]) -> str:
    return "digitrec " + shlex.join(args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="a finished first step to reuse ('default': the shipped one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.base:
            base = resolve_checkpoint(args.base)
            base_command = read_meta(base).get("command", "").split(" && ")[0]
            if not base_command.startswith("digitrec train "):
                raise SystemExit(f"{base} does not record the command that trained it")
            record = base.with_name("default.json") if base.parent.resolve() == ASSETS else None
            base_config = json.loads((record or base.parent / "config.json").read_text())
            base_config = base_config.get("config", base_config)
        else:
            digitrec(*BASE, "--out", str(work / "base"), "--no-progress")
            base, base_command = work / "base" / "best.safetensors", command(BASE)
            base_config = json.loads((work / "base" / "config.json").read_text())
        where = {"base": str(base), "tuned": str(work / "tuned")}

        def at(words: list[str]) -> list[str]:  # step names -> their files in the work dir
            return [where.get(w, w) for w in words]

        digitrec(*at(TUNE), "--out", where["tuned"], "--no-progress")
        digitrec(*at(AVERAGE), "--out", str(work / "shipped"))

        run = work / "shipped"
        digitrec("evaluate", str(run), "--out", str(work / "report"))
        report = json.loads((work / "report" / "report.json").read_text())
        meta = read_meta(run / "best.safetensors")
        # As a chain to run in an empty directory: each step's output named as the next reads it.
        steps = [f"{base_command} --out base", command([*TUNE, "--out", "tuned"]), command(AVERAGE)]
        extra = {"command": " && ".join(steps), "test_accuracy": report["accuracy"],
                 "shipped": True}  # fmt: skip
        copy_with_meta(run / "best.safetensors", ASSETS / "default.safetensors", extra)
        # The ONNX export beside it is what the Predictor runs by default (--backend auto).
        digitrec("export", str(ASSETS / "default.safetensors"))
        write_json(
            ASSETS / "default.json",
            {
                "command": extra["command"],
                "steps": steps,
                "validation": meta["metrics"],
                "test": {k: report[k] for k in ("accuracy", "errors", "loss", "ece")},
                "config": json.loads((run / "config.json").read_text()),
                "base": base_config,
                "tuned": json.loads((work / "tuned" / "config.json").read_text()),
            },
        )
    print(f"shipped {ASSETS / 'default.safetensors'}: test accuracy {report['accuracy']:.4f}")


if __name__ == "__main__":
    main()
