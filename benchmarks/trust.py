"""Trust benchmark: do the shipped model's answers mean something? (issue 30)

On the MNIST test set: expected calibration error and NLL as trained (temperature 1) and
calibrated (the checkpoint's temperature); the risk-coverage table (errors among the
answers given when only the most confident are answered) and the stored "not sure"
threshold's operating point. Then junk (``digitrec.outliers``: scribbles, letters,
symbols, blots, a dot, from this benchmark's seeds; Fashion-MNIST's test split): the
share of each kind *flagged*, answered "not sure", "not a digit" (the detector,
``digitrec.notdigit``) or "no digit" rather than with a digit; and the share of real
digits wrongly flagged: MNIST test, the robustness benchmark's real-input renders of test
digits, and phone photos (and, as junk, phone photos of Fashion-MNIST's clothes). Each
against the reference in the same run: the same weights as trained, with the fixed 0.6
"not sure" they had before and no detector. Targets: test ECE <= 0.01; every outlier kind
>= 95% flagged while <= 1% of MNIST test and <= 2% of the real-input renders are.

    python benchmarks/trust.py [--n 500] [--renders 100] [--photos 20] [--digits 10000]
                               [--model-path M] [--misses PNG]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

import variants
from digitrec import outliers
from digitrec.calibration import UNCERTAIN_BELOW, calibration_bins, risk_coverage, selective
from digitrec.checkpoint import load_model
from digitrec.data import load_dataset, to_float
from digitrec.predictor import Predictor
from digitrec.runs import resolve_model_path

PHOTO_KINDS = {"photo, small": (0.02, 0.06), "photo, framed": (0.06, 0.7)}
SOMETHING_ELSE = "photo of something else"


def flagged(predictor: Predictor, pre, labels=None) -> tuple[np.ndarray, float, float | None]:
    """Which are answered without a digit (blank, "not sure" or "not a digit"), the share
    answered "not a digit", and for digits, the share of those the digit model reads right
    that are flagged all the same."""
    preds = predictor.predict_preprocessed(pre)
    out = np.array([p.blank or p.uncertain for p in preds])
    junk = float(np.mean([p.not_a_digit for p in preds]))
    if labels is None:
        return out, junk, None
    right = np.array([int(np.argmax(p.probabilities)) == y and not p.blank
                      for p, y in zip(preds, labels, strict=True)])  # fmt: skip
    return out, junk, float(out[right].mean())


def save_misses(misses: dict[str, list[np.ndarray]], path: str, per_row: int = 20) -> None:
    """A row per kind of junk: the 28x28s answered with a digit (up to ``per_row``), 3x."""
    grid = np.zeros((30 * len(misses), 30 * per_row), np.float32)
    for r, images in enumerate(misses.values()):
        for c, img in enumerate(images[:per_row]):
            grid[30 * r + 1 : 30 * r + 29, 30 * c + 1 : 30 * c + 29] = img
    Image.fromarray((grid * 255).astype(np.uint8)).resize(
        (grid.shape[1] * 3, grid.shape[0] * 3), Image.Resampling.NEAREST
    ).save(path)
    print(f"\nwrote {path}: rows {', '.join(misses)}")


def calibration_table(
    model: torch.nn.Module, temperature: float, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, np.ndarray]:
    """ECE and NLL as trained and calibrated; the logits and which answers are right."""
    with torch.inference_mode():
        logits = torch.cat([model(x[i : i + 2000]) for i in range(0, len(x), 2000)]).double()
    correct = (logits.argmax(1) == y).numpy()
    print(f"{'MNIST test':<28} {'ECE':>8} {'NLL':>8} {'accuracy':>9}")
    for name, t in (("as trained (T = 1)", 1.0), (f"calibrated (T = {temperature:.3f})",
                                                  temperature)):  # fmt: skip
        conf = F.softmax(logits / t, 1).max(1).values.numpy()
        nll = float(F.cross_entropy(logits / t, y))
        print(f"{name:<28} {calibration_bins(conf, correct)[0]:>8.4f} {nll:>8.4f} "
              f"{correct.mean():>9.2%}")  # fmt: skip
    return logits, correct


def coverage_table(conf: np.ndarray, correct: np.ndarray, threshold: float) -> None:
    curve = risk_coverage(conf, correct)
    print(f"\n{'answered (coverage)':<28} {'wrong among them':>16} {'confidence down to':>19}")
    for c in (1.0, 0.995, 0.99, 0.98, 0.95, 0.9):
        k = max(1, round(c * len(conf))) - 1
        print(f"{c:<28.1%} {curve['risk'][k]:>16.3%} {curve['threshold'][k]:>19.4f}")
    s = selective(conf, correct, threshold)
    print(f"{'not sure below ' + format(threshold, '.4f'):<28} {s['risk']:>16.3%}   "
          f"answers {s['coverage']:.2%}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="renders per outlier kind")
    ap.add_argument("--renders", type=int, default=100, help="digits per real-input variant")
    ap.add_argument("--photos", type=int, default=20, help="phone photos per kind (0: none)")
    ap.add_argument("--digits", type=int, default=10000, help="MNIST test digits to flag")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-path")
    ap.add_argument("--misses", metavar="PNG", help="save the junk answered with a digit here")
    args = ap.parse_args()

    path, source = resolve_model_path(args.model_path, None)
    model, meta = load_model(path)
    now = Predictor.load(path, backend="torch")
    before = Predictor(model, {k: v for k, v in meta.items() if k != "calibration"}, source,
                       not_digit=False)  # fmt: skip
    detector = now.not_digit_detector()
    print(f"model {now.name} ({source}): temperature {now.temperature:.4f}, 'not sure' below "
          f"{now.uncertain_below:.4f}, 'not a digit' detector "
          f"{detector.path.name if detector and detector.path else 'none'}; reference: the same "
          f"weights, T = 1, 'not sure' below {UNCERTAIN_BELOW}, no detector\n")  # fmt: skip

    mnist, fashion = load_dataset("mnist"), load_dataset("fashion-mnist")
    x, y = to_float(mnist.test_images), mnist.test_labels
    logits, correct = calibration_table(model, now.temperature, x, y)
    conf = F.softmax(logits / now.temperature, 1).max(1).values.numpy()
    coverage_table(conf, correct, now.uncertain_below)

    print(f"\n{'flagged (not sure, no digit,':<28} {'now':>10} {'of which':>12} {'reference':>10}"
          f"\n{' not a digit)':<28} {'':>10} {'not a digit':>12} {'':>10}   "
          "(digits: of those read right)")  # fmt: skip
    rows: dict[str, float] = {}
    misses: dict[str, list[np.ndarray]] = {}

    def row(name: str, images, labels=None) -> None:
        pre = Predictor.prepare(images)
        out, junk, a_right = flagged(now, pre, labels)
        b, _, b_right = flagged(before, pre, labels)
        rows[name] = a = float(out.mean())
        if labels is None:
            misses[name] = [p.image for p, o in zip(pre, out, strict=True) if not o]
        right = "" if a_right is None else f"   ({a_right:.1%} / {b_right:.1%})"
        print(f"{name:<28} {a:>10.1%} {junk:>12.1%} {b.mean():>10.1%}{right}", flush=True)

    for i, (kind, render) in enumerate(outliers.KINDS.items()):
        rng = np.random.default_rng([args.seed, 1000 + i])
        row(kind, [render(rng) for _ in range(args.n)])
    row("Fashion-MNIST (test)", list(fashion.test_images[: args.n].numpy()))
    row("MNIST test (digits)", list(mnist.test_images[: args.digits].numpy()),
        y[: args.digits].numpy())  # fmt: skip
    rng = np.random.default_rng([args.seed, 2000])
    idx = rng.choice(len(x), args.renders, replace=False)
    digits = mnist.test_images[idx].numpy()
    renders = [render(d, np.random.default_rng([args.seed, 3000 + j, int(k)]))
               for j, (_, render) in enumerate(variants.VARIANTS.values())
               for k, d in enumerate(digits)]  # fmt: skip
    row(f"real-input renders ({len(variants.VARIANTS)})", renders,
        np.tile(mnist.test_labels[idx].numpy(), len(variants.VARIANTS)))  # fmt: skip
    for j, (kind, share) in enumerate(PHOTO_KINDS.items() if args.photos else []):
        rng = np.random.default_rng([args.seed, 4000 + j])
        photos = [variants.phone_photo(d, rng, share) for d in digits[: args.photos]]
        row(kind, photos, mnist.test_labels[idx[: args.photos]].numpy())
    if args.photos:  # Fashion-MNIST's clothes photographed on paper as the digits are
        rng = np.random.default_rng([args.seed, 5000])
        things = fashion.test_images[-args.photos :].numpy()
        row(SOMETHING_ELSE, [variants.phone_photo(t, rng) for t in things])

    junk = min(v for k, v in rows.items() if k in outliers.KINDS or k.startswith("Fashion")
               or k == SOMETHING_ELSE)  # fmt: skip
    real = rows[next(k for k in rows if k.startswith("real"))]
    ece = calibration_bins(conf, correct)[0]
    if args.misses:
        save_misses(misses, args.misses)
    print("\ntargets:")
    for text, value, ok in (
        ("test ECE <= 0.01", ece, ece <= 0.01),
        ("every outlier kind flagged >= 95%", junk, junk >= 0.95),
        ("MNIST test flagged <= 1%", rows["MNIST test (digits)"],
         rows["MNIST test (digits)"] <= 0.01),
        ("real-input renders flagged <= 2%", real, real <= 0.02),
    ):  # fmt: skip
        print(f"  {'PASS' if ok else 'MISS'}  {value:8.4f}  {text}")


if __name__ == "__main__":
    main()
