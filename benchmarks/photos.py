"""Phone photos: the shipped model on 12-megapixel JPEGs of MNIST digits on lamp-lit paper.

Each digit is drawn in dark ink on warm-tinted paper under a lamp's gradient, with
sensor noise, in a 4032x3024 JPEG (variants.phone_photo), small (2 to 6% of the frame's
height, as on a page photographed whole), framed (6 to 70%), on a sheet of paper lying,
turned, on a dark desk that shows all round it, or tiny (1.2 to 2%: 36 to 60 px, a digit
among a page of writing); and blank paper, bare or on the desk, which should all read
"no digit" (a look closer for small digits must not find digits in the paper's grain).
Per kind: accuracy of the
robust pipeline and of the textbook one (invert, crop, fit, centre), how many were read
as "no digit", and the time to preprocess one photo decoded at reduced scale (as the
pipeline does) against a full decode (``DECODE_SIDE`` 0), in the same run.

    python benchmarks/photos.py [--n 200] [--split test|val] [--model-path M]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from digitrec import preprocess as pp
from digitrec.data import load_dataset, split_indices
from digitrec.predictor import Predictor
from variants import decoded_at, phone_photo

# name: (the digit's share of the frame's height, on a sheet lying on a desk)
KINDS = {
    "small (2-6% of height)": ((0.02, 0.06), False),
    "framed (6-70%)": ((0.06, 0.7), False),
    "sheet on a desk (6-40%)": ((0.06, 0.4), True),
    "tiny (1.2-2%)": ((0.012, 0.02), False),
    "blank paper": (None, False),  # every one should read "no digit"
    "blank sheet on a desk": (None, True),
}


def timed(photos: list[bytes], decode_side: int) -> tuple[list[pp.Preprocessed], float]:
    """The pipeline on every photo, and its mean ms per photo, at this ``DECODE_SIDE``."""
    with decoded_at(decode_side):
        t0 = time.perf_counter()
        out = [pp.preprocess(p) for p in photos]
        return out, (time.perf_counter() - t0) / len(photos) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="photos per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=["test", "val"], default="test")
    ap.add_argument("--model-path")
    args = ap.parse_args()

    predictor = Predictor.load(args.model_path)
    ds = load_dataset("mnist")
    if args.split == "val":
        _, val_idx = split_indices(len(ds.train_images), 5000, seed=0)
        pool, pool_labels = ds.train_images[val_idx], ds.train_labels[val_idx]
    else:
        pool, pool_labels = ds.test_images, ds.test_labels
    idx = np.random.default_rng(args.seed).choice(len(pool), args.n, replace=False)
    digits, labels = pool[idx].numpy(), pool_labels[idx].numpy()

    def accuracy(pre: list[pp.Preprocessed]) -> float:
        preds = predictor.predict_preprocessed(pre)
        return float(np.mean([p.digit == y for p, y in zip(preds, labels, strict=True)]))

    print(f"model {predictor.name} ({predictor.source}), {args.n} MNIST {args.split} digits "
          "per kind, 4032x3024 JPEGs")  # fmt: skip
    print(f"{'photo':<24} {'robust':>7} {'no digit':>8} {'textbook':>8} "
          f"{'ms reduced':>10} {'ms full':>8} {'ratio':>6}")  # fmt: skip
    for number, (name, (share, desk)) in enumerate(KINDS.items()):
        rng = np.random.default_rng([args.seed, number])
        photos = [phone_photo(None if share is None else d, rng, share or (0, 0), desk)
                  for d in digits]  # fmt: skip
        robust, ms = timed(photos, pp.DECODE_SIDE)
        _, ms_full = timed(photos, 0)
        blank = np.mean([r.blank for r in robust])
        if share is None:  # no digit to get right: "no digit" should be 100%
            scores = f"{'-':>7} {blank:>8.1%} {'-':>8}"
        else:
            textbook = [pp.preprocess(p, robust=False) for p in photos]
            scores = f"{accuracy(robust):>7.2%} {blank:>8.1%} {accuracy(textbook):>8.2%}"
        print(f"{name:<24} {scores} {ms:>10.1f} {ms_full:>8.1f} {ms_full / ms:>5.1f}x",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
