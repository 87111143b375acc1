"""Robustness benchmark: the shipped model on real-input renderings of MNIST test digits.

Every variant (see variants.py) is rendered from the same seeded sample of the MNIST
*test* set, at realistic size, and goes through the full pipeline and Predictor, once
with the robust steps and once with the textbook pipeline (invert, crop, fit, centre),
so each step's worth shows. Targets (issues 3 and 29): canvas, stroke, rotation and framing
(tight crops, small scans) variants within 0.5 points of clean accuracy; paper and colour
>= 98%; the MNIST-C mean >= 95%; digits drawn 40-80 px tall with the page's fixed pen
within 1 point of full-size ones. Then the handwriting styles MNIST under-represents
(variants.STYLES: a stroke model, no MNIST digit in it) and the split's own 1s and 7s
drawn on the page: flagged 1s read as 1 >= 98% while 7s stay >= 99%, every style >= 98%.

    python benchmarks/robustness.py [--n 1000] [--split test|val] [--model-path M] [--tta]
                                    [--sheet out.png] [--only NAME]... [--erosion F]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import variants
from digitrec import plots
from digitrec.data import load_dataset, split_indices
from digitrec.predictor import Predictor
from digitrec.preprocess import decode, flatten, preprocess
from variants import STYLES, VARIANTS, drawn_png, written_style


def accuracy(predictor: Predictor, pre, labels, tta: bool = False) -> float:
    preds = predictor.predict_preprocessed(pre, tta=tta)
    return float(np.mean([p.digit == y for p, y in zip(preds, labels, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="test images per variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="test: the reported figures; val: the validation split (held out of training, "
        "seed 0), for developing the pipeline without looking at the test set",
    )
    ap.add_argument("--model-path")
    ap.add_argument("--tta", action="store_true", help="also with test-time augmentation")
    ap.add_argument("--sheet", help="PNG showing one rendering per variant and its 28x28")
    ap.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="a variant to run (repeat for several; default: all), for a quick look; names "
        "hold commas ('paper, lamp, JPEG'), so they are not comma-separated",
    )
    ap.add_argument(
        "--erosion",
        type=float,
        metavar="F",
        help="erode the 'eroded strokes' variant by exactly F of the strokes' typical "
        "half-width (default: uniform in 0.6-0.8), to see how deep a cut is still read",
    )
    args = ap.parse_args()
    if args.erosion is not None:
        if not 0 <= args.erosion < 1:
            ap.error("--erosion is a share of the half-width, in [0, 1)")
        variants.EROSION = (args.erosion, args.erosion)

    predictor = Predictor.load(args.model_path)
    ds = load_dataset("mnist")
    rng = np.random.default_rng(args.seed)
    if args.split == "val":
        _, val_idx = split_indices(len(ds.train_images), 5000, seed=0)
        pool_images, pool_labels = ds.train_images[val_idx], ds.train_labels[val_idx]
    else:
        pool_images, pool_labels = ds.test_images, ds.test_labels
    idx = rng.choice(len(pool_images), args.n, replace=False)
    digits = pool_images[idx].numpy()
    labels = pool_labels[idx].numpy()
    print(
        f"model {predictor.name} ({predictor.source}), {args.n} MNIST {args.split} images "
        "per variant"
        + (f", strokes eroded by {args.erosion:.0%}" if args.erosion is not None else "")
    )

    head = f"{'variant':<26} {'group':<9} {'textbook':>9} {'robust':>8}"
    head += f" {'robust+tta':>10}" if args.tta else ""
    print(head + f" {'ms/img':>7}  (robust preprocessing per image, prediction batched)")
    results: dict[str, dict[str, float]] = {}
    sheet = []
    only = args.only or list(VARIANTS)
    if unknown := [v for v in only if v not in VARIANTS and v not in STYLES]:
        ap.error(f"unknown variants {unknown}; known: {', '.join([*VARIANTS, *STYLES])}")
    for number, (name, (group, render)) in enumerate(VARIANTS.items()):
        if name not in only:
            continue
        vr = np.random.default_rng([args.seed, number])  # the same renders, alone or not
        images = [render(d, vr) for d in digits]
        t0 = time.perf_counter()
        robust = [preprocess(img) for img in images]
        row = {"robust": accuracy(predictor, robust, labels)}
        ms = (time.perf_counter() - t0) / args.n * 1000
        textbook = [preprocess(img, robust=False) for img in images]
        row["textbook"] = accuracy(predictor, textbook, labels)
        if args.tta:
            row["tta"] = accuracy(predictor, robust, labels, tta=True)
        results[name] = {"group": group, **row}
        line = f"{name:<26} {group:<9} {row['textbook']:>9.2%} {row['robust']:>8.2%}"
        line += f" {row['tta']:>10.2%}" if args.tta else ""
        print(line + f" {ms:>7.2f}", flush=True)
        sheet.append((name, images[0]))

    styles = {k: v for k, v in STYLES.items() if k in only or not args.only}
    if styles:
        results.update(style_table(predictor, styles, pool_images, pool_labels, args))
    if len(results) == len(VARIANTS) + len(STYLES) + 2:
        print_targets(results)

    if args.sheet:
        shown, titles = [], []
        for name, img in sheet:
            shown += [flatten(decode(img)[0])[0], preprocess(img).image]
            titles += [name[:20], "model input"]
        plots.image_grid(shown, titles, args.sheet, cols=8)
        print(f"sheet: {args.sheet}")


def style_table(predictor: Predictor, styles: dict, images, labels, args) -> dict[str, dict]:
    """Each handwriting style written ``args.n`` times by the stroke model (its own seeds
    for the test and the validation run), and every MNIST 1 and 7 of the split drawn on the
    page (up to ``args.n`` of each): the share read as its digit, and the 1/7 confusion
    both ways."""
    print(f"\n{'style':<26} {'digit':>5} {'read':>8} {'1<->7':>7}  most read instead")
    out = {}

    def seed(name: str, i: int) -> list[int]:  # the validation run writes other digits
        return [args.seed, args.split == "val", list(STYLES).index(name), i]

    rows = [(name, d, [written_style(name, np.random.default_rng(seed(name, i)))
                       for i in range(args.n)])
            for name, (d, *_) in styles.items()]  # fmt: skip
    if len(styles) == len(STYLES):
        for d in (1, 7):
            rng = np.random.default_rng([args.seed, 99, d])
            drawn = [drawn_png(im.numpy(), rng) for im in images[labels == d][: args.n]]
            rows.append((f"MNIST {args.split} {d}s drawn", d, drawn))
    for name, d, pngs in rows:
        got = np.array([p.digit for p in predictor.predict(pngs)])
        right, swap = float(np.mean(got == d)), float(np.mean(got == 8 - d)) if d in (1, 7) else 0
        wrong = np.bincount(got[got != d], minlength=10)
        instead = f"{wrong.argmax()} ({wrong.max() / len(got):.1%})" if wrong.any() else "-"
        swapped = f"{swap:>7.1%}" if d in (1, 7) else f"{'':>7}"
        print(f"{name:<26} {d:>5} {right:>8.1%} {swapped}  {instead}", flush=True)
        out[name] = {"group": "style", "robust": right, "digit": d}
    return out


def print_targets(results: dict[str, dict[str, float]]) -> None:
    clean = results["clean 28x28"]["robust"]
    print("\ntargets (robust pipeline):")
    checks = []
    for group in ("canvas", "stroke", "rotation", "framing"):
        worst = min(r["robust"] for r in results.values() if r["group"] == group)
        checks.append((f"{group}: worst within 0.5 pt of clean ({clean:.2%})",
                       worst, worst >= clean - 0.005))  # fmt: skip
    for group in ("paper", "colour"):
        worst = min(r["robust"] for r in results.values() if r["group"] == group)
        checks.append((f"{group}: worst >= 98%", worst, worst >= 0.98))
    full, small = (results[f"page pen, {k}"]["robust"] for k in ("full size", "40-80 px, read"))
    checks.append((f"small drawings, as read: within 1 pt of full size ({full:.2%})",
                   small, small >= full - 0.01))  # fmt: skip
    mc = float(np.mean([r["robust"] for r in results.values() if r["group"] == "mnist-c"]))
    mc_text = float(np.mean([r["textbook"] for r in results.values() if r["group"] == "mnist-c"]))
    checks.append((f"mnist-c mean >= 95% (textbook pipeline: {mc_text:.2%})", mc, mc >= 0.95))
    style = {k: r for k, r in results.items() if r["group"] == "style"}
    ones = min(r["robust"] for r in style.values() if r["digit"] == 1)
    sevens = min(r["robust"] for r in style.values() if r["digit"] == 7)
    checks.append(("styles: flagged 1s (and drawn 1s) read as 1 >= 98%", ones, ones >= 0.98))
    checks.append(("styles: 7s, plain, barred and drawn, read as 7 >= 99%", sevens, sevens >= 0.99))
    worst = min(r["robust"] for r in style.values())
    checks.append(("styles: every style >= 98%", worst, worst >= 0.98))
    for text, value, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {value:7.2%}  {text}")


if __name__ == "__main__":
    main()
