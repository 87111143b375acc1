"""Reading images: predict (a digit each, or random test images) and read (whole numbers)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from digitrec.cli.args import backend_arg, data_args
from digitrec.errors import DigitrecError


def add(sub: argparse._SubParsersAction) -> None:
    _add_predict_commands(sub)
    _add_read_command(sub)


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
    backend_arg(p)
    data_args(p, dataset=False)


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
    backend_arg(p)


GRID_MAX = 100  # images drawn by `predict --random`


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


COMMANDS = {
    "predict": cmd_predict,
    "read": cmd_read,
}
