"""Learning from corrections: correct, feedback, learn, model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from digitrec.cli.args import backend_arg, data_args, digit, feedback_arg
from digitrec.errors import DigitrecError


def add(sub: argparse._SubParsersAction) -> None:
    _add_feedback_commands(sub)
    _add_learn_commands(sub)


def _add_feedback_commands(sub: argparse._SubParsersAction) -> None:
    """`correct` and `feedback list|stats|export|delete`: the corrections users make."""
    p = sub.add_parser(
        "correct",
        help="say which digit an image really is (kept for `digitrec learn`)",
        description="Predict IMAGE, then keep it with the digit it really is in the "
        "corrections store, as the page's and the window's 'Wrong? It is a ...' do.",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("label", type=digit, metavar="LABEL", help="the digit it is, 0 to 9")
    p.add_argument("--model-path", help="checkpoint or run (default: the usual resolution)")
    p.add_argument("--runs-dir")
    feedback_arg(p)
    backend_arg(p)
    fb = sub.add_parser("feedback", help="the corrections collected: list, stats, export, delete")
    fsub = fb.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)
    for name, text in (("list", "every record, oldest first"), ("stats", "how many, of what")):
        p = fsub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true")
        feedback_arg(p)
    p = fsub.add_parser("export", help="a PNG per record in DIR/<label>/, originals, a CSV")
    p.add_argument("out", metavar="DIR")
    feedback_arg(p)
    p = fsub.add_parser("delete", help="remove records for good")
    p.add_argument("ids", nargs="+", type=int, metavar="ID")
    feedback_arg(p)


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
    feedback_arg(p)
    data_args(p, dataset=False)
    m = sub.add_parser("model", help="the model registry: list, activate VERSION, rollback")
    msub = m.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    msub.add_parser("list", help="every version (0: the shipped model), the active one marked")
    p = msub.add_parser("activate", help="make VERSION the model predict, serve and gui use")
    p.add_argument("version", type=int, metavar="VERSION")
    msub.add_parser("rollback", help="back to the version active before this one")


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
    "correct": cmd_correct,
    "feedback": cmd_feedback,
    "learn": cmd_learn,
    "model": cmd_model,
}
