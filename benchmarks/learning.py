"""Learning benchmark: does ``digitrec learn`` teach the model one user's handwriting
without making it forget MNIST? (issue 31)

The simulated user writes every digit turned 30-40 degrees clockwise (a left-handed
writer with the page turned), with a pen, 90-160 px tall on the pad. The user writes
training-split digits in turn and corrects every answer that is wrong (right ones are left
alone): after 10, 25, 50 and 100 corrections ``learn`` runs on them, each time from the
same starting model in a store of its own. Then: the user's unseen digits (test-split
digits written the same way; ``--split val`` uses validation digits instead, to choose
settings on), MNIST test, before and after, the gate's verdict and the time ``learn``
took. Targets: after 50 corrections the user's unseen digits gain >= 10 points (or reach
>= 98%), MNIST test falls by <= 0.1 point, ``learn`` takes < 120 s on 2 cores.

    python benchmarks/learning.py [--counts 10 25 50 100] [--unseen 2000] [--split test]
                                  [--model-path M]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitrec.checkpoint import load_model
from digitrec.compose import pen_strokes, to_u8
from digitrec.data import load_dataset, split_indices, to_float
from digitrec.feedback import FeedbackStore, correction_of
from digitrec.learn import learn
from digitrec.models import batched_logits
from digitrec.predictor import Predictor
from digitrec.runs import resolve_model_path

SEED = 31


def written(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The user's hand: ``digit`` (uint8 28x28) redrawn with a pen, turned 30-40 degrees
    clockwise, dark on a white pad."""
    ink = Image.fromarray(to_u8(pen_strokes(digit, int(rng.integers(90, 161)))))
    turned = ink.rotate(-float(rng.uniform(30, 40)), Image.Resampling.BICUBIC, expand=True)
    pad = Image.new("L", (turned.width + 60, turned.height + 60))
    pad.paste(turned, (30, 30))
    return 255 - np.asarray(pad)


def corrections_of(predictor: Predictor, mnist, count: int, rng) -> tuple[list, int]:
    """The first ``count`` training digits the user writes that the model misreads, as
    corrections, and how many digits were written to find them."""
    train, _ = split_indices(len(mnist.train_images), 5000, 0)
    found, written_n = [], 0
    for i in rng.permutation(train.numpy()):
        image = written(mnist.train_images[i].numpy(), rng)
        pred = predictor.predict_one(image)
        written_n += 1
        label = int(mnist.train_labels[i])
        if pred.digit != label and not pred.blank:
            found.append(correction_of(pred, label, predictor.sha256, "web", None))
            if len(found) == count:
                return found, written_n
    return found, written_n


def accuracy(predictor: Predictor, images: list[np.ndarray], labels: np.ndarray) -> float:
    preds = predictor.predict(images)
    return float(np.mean([p.digit == y for p, y in zip(preds, labels, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[10, 25, 50, 100])
    ap.add_argument("--unseen", type=int, default=2000, help="the user's digits to score on")
    ap.add_argument("--split", choices=["test", "val"], default="test")
    ap.add_argument("--model-path")
    ap.add_argument("--quick", action="store_true",
                    help="learn on 20 replayed digits a class, 1 pass, 20 per canary: a check "
                    "that the benchmark runs, not its figures")  # fmt: skip
    args = ap.parse_args()
    sizes = {"replay_per_class": 20, "epochs": 1, "per_canary": 20} if args.quick else {}
    home = tempfile.mkdtemp(prefix="digitrec-learning-")
    os.environ["DIGITREC_HOME"] = home  # promotions go to a registry of the benchmark's own
    mnist = load_dataset("mnist")
    path, _ = resolve_model_path(args.model_path)
    start = Predictor.load(path, backend="torch", not_digit=False)
    rng = np.random.default_rng(SEED)
    if args.split == "test":
        pool, pool_labels = mnist.test_images, mnist.test_labels
        idx = rng.choice(len(pool), args.unseen, replace=False)
    else:
        pool, pool_labels = mnist.train_images, mnist.train_labels
        _, val = split_indices(len(pool), 5000, 0)
        idx = rng.choice(val.numpy(), args.unseen, replace=False)
    unseen = [written(pool[i].numpy(), rng) for i in idx]
    unseen_y = pool_labels[idx].numpy()
    test_x, test_y = to_float(mnist.test_images), mnist.test_labels

    def mnist_test(checkpoint: Path) -> float:
        model, _ = load_model(checkpoint)
        return float((batched_logits(model, test_x).argmax(1) == test_y).float().mean())

    base_user, base_test = accuracy(start, unseen, unseen_y), mnist_test(path)
    corrections, wrote = corrections_of(start, mnist, max(args.counts), rng)
    print(f"model {path}; the user's digits ({args.split} split, {args.unseen}): "
          f"{100 * base_user:.2f}% read right; {wrote} written to find {len(corrections)} "
          "misread")  # fmt: skip
    print(
        f"{'corrections':>11} {'user before':>11} {'user after':>10} {'gain':>6} "
        f"{'MNIST test before':>17} {'after':>7} {'change':>7} {'held out':>8} {'alpha':>5} "
        f"{'learn s':>8}  gate"
    )
    for n in args.counts:
        store = FeedbackStore(str(Path(home) / f"feedback-{n}.sqlite3"))
        for c in corrections[:n]:
            store.add(c)
        t = time.perf_counter()
        out = learn(store, model_path=str(path), dry_run=True, log=lambda s: None, **sizes)
        seconds = time.perf_counter() - t
        after = Predictor.load(out.run / "best.safetensors", backend="torch", not_digit=False)
        user, test = accuracy(after, unseen, unseen_y), mnist_test(out.run / "best.safetensors")
        verdict = "passed" if not out.refused else "refused: " + "; ".join(out.refused)
        gain, change = 100 * (user - base_user), 100 * (test - base_test)
        held = f"{out.before.held_out}->{out.after.held_out}/{out.after.held_out_n}"
        print(f"{n:>11} {100 * base_user:>10.2f}% {100 * user:>9.2f}% {gain:>+6.1f} "
              f"{100 * base_test:>16.2f}% {100 * test:>6.2f}% {change:>+7.2f} {held:>8} "
              f"{out.alpha:>5.1f} {seconds:>8.1f}  {verdict}", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
