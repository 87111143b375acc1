"""Inference speed: PyTorch eager against the Predictor's backends, model alone and end to end.

In one run, for the shipped model (`best`) and the `fast` architecture: single-image
latency (p50, p99) and batch-256 throughput of PyTorch eager, PyTorch frozen for
inference (the Predictor's torch backend), ONNX Runtime float32 and int8 (static, QDQ:
the shipped model's exports as shipped; `fast` is trained here first, one epoch, and
exported, checked on the test set as `digitrec export` checks them); then end to end,
the PNG the web page posts in (variants.drawn_png), prediction out, through the
Predictor on each backend, and the preprocessing of a 12-megapixel phone photo. Threads:
1 by default, as the server runs. The last lines compare against the targets of issue 7
(model alone under 0.1 ms per image, end to end under 1 ms p50, ONNX Runtime at least
3x faster than eager for a single image).

    python benchmarks/inference.py [--threads 1] [--seconds 2] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from digitrec import preprocess as pp
from digitrec.checkpoint import load_model
from digitrec.data import load_dataset
from digitrec.export import OnnxModel, export
from digitrec.models import inference_module
from digitrec.predictor import Predictor
from digitrec.recipes import make_config
from digitrec.runs import shipped_model_path
from digitrec.train import train
from variants import decoded_at, drawn_png, phone_photo


def timed(fn, seconds: float) -> np.ndarray:
    """Per-call times in ms over about ``seconds`` (after warm-up)."""
    for _ in range(5):
        fn()
    out, stop = [], time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.array(out) * 1000


def phone_photos(ds, rng: np.random.Generator, seconds: float) -> None:
    """Preprocessing 12-megapixel JPEGs (variants.phone_photo): decoded at reduced scale,
    as the pipeline does, against a full decode (``DECODE_SIDE`` 0) in the same run."""
    photos = [phone_photo(ds.test_images[i].numpy(), rng) for i in range(4)]
    size = np.mean([len(p) for p in photos]) / 1e6
    print(f"\npreprocessing a 12-megapixel phone photo ({size:.1f} MB JPEG)")
    p50 = {}
    for label, side in (("reduced decode", pp.DECODE_SIDE), ("full decode", 0)):
        it = iter(range(10**9))
        with decoded_at(side):
            t = timed(lambda it=it: pp.preprocess(photos[next(it) % len(photos)]), seconds)
        p50[label] = np.percentile(t, 50)
        print(f"{label:<28} {p50[label]:>7.1f} {np.percentile(t, 99):>7.1f}")
    print(f"reduced decode {p50['full decode'] / p50['reduced decode']:.1f}x faster")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="`fast` trained on 3,000 images, "
                    "exports unchecked: a check that it runs, not its figures")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("mnist")
    x1 = ds.test_images[:1].float().div(255)[:, None]
    x256 = ds.test_images[:256].float().div(255)[:, None]
    rng = np.random.default_rng(0)
    pngs = [drawn_png(ds.test_images[i].numpy(), rng) for i in range(64)]

    print(f"{args.threads} thread(s); times in ms")
    print(f"{'model':<6} {'runtime':<16} {'1 image p50':>11} {'p99':>7} {'batch 256 /img':>14} "
          f"{'img/s':>8}")  # fmt: skip
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        shipped = shipped_model_path()  # with the exports it ships with, beside it
        # A trained `fast` (its one-epoch recipe, seconds): int8 calibration and the
        # accuracy check mean something only for trained weights.
        cfg = make_config("fast", None, {"device": "cpu", "limit": 3000 if args.quick else 0})
        train(cfg, ds, Path(tmp) / "fast-run", log=lambda s: None, progress=False)
        fast = Path(tmp) / "fast.safetensors"
        fast.write_bytes((Path(tmp) / "fast-run" / "best.safetensors").read_bytes())
        export(fast, quantize="int8", check=not args.quick)
        for ckpt in (shipped, fast):
            model, meta = load_model(ckpt)
            runtimes = {
                "torch eager": model,
                "torch frozen": inference_module(model),
                "onnx float32": OnnxModel(ckpt.with_suffix(".onnx"), args.threads),
                "onnx int8": OnnxModel(ckpt.with_suffix(".int8.onnx"), args.threads),
            }
            for name, run in runtimes.items():
                with torch.inference_mode():
                    one = timed(lambda run=run: run(x1), args.seconds)
                    batch = timed(lambda run=run: run(x256), args.seconds) / 256
                p50, p99, per = np.percentile(one, 50), np.percentile(one, 99), np.median(batch)
                summary[(meta["model"], name)] = (p50, per)
                print(f"{meta['model']:<6} {name:<16} {p50:>11.3f} {p99:>7.3f} {per:>14.4f} "
                      f"{1000 / per:>8.0f}")  # fmt: skip

        print(f"\nend to end: a {np.mean([len(p) for p in pngs]) / 1000:.1f} kB page PNG in, "
              "prediction out (Predictor.predict_one)")  # fmt: skip
        print(f"{'model, backend':<28} {'p50':>7} {'p99':>7}")
        e2e = {}
        it = iter(range(10**9))
        t = timed(lambda: pp.preprocess(pngs[next(it) % len(pngs)]), args.seconds)
        print(f"{'(preprocessing alone)':<28} {np.percentile(t, 50):>7.3f} "
              f"{np.percentile(t, 99):>7.3f}")  # fmt: skip
        int8 = shipped.with_suffix(".int8.onnx")
        for label, path, backend, not_digit in (
            ("best, torch (frozen)", shipped, "torch", True),
            ("best, onnx float32", shipped, "onnx", True),
            ("best, onnx int8", int8, "onnx", True),
            ("  without 'not a digit'", int8, "onnx", False),  # the detector's cost
            ("fast, onnx float32", fast, "onnx", True),
        ):
            p = Predictor.load(path, backend=backend, not_digit=not_digit)
            it = iter(range(10**9))
            t = timed(lambda p=p, it=it: p.predict_one(pngs[next(it) % len(pngs)]), args.seconds)
            e2e[label] = np.percentile(t, 50)
            print(f"{label:<28} {np.percentile(t, 50):>7.3f} {np.percentile(t, 99):>7.3f}")
        phone_photos(ds, rng, args.seconds)

    print("\ntargets (issue 7):")
    for model in ("best", "fast"):
        eager, f32 = summary[(model, "torch eager")][0], summary[(model, "onnx float32")][0]
        best_per = min(v[1] for (m, _), v in summary.items() if m == model)
        print(
            f"  {model}: model alone {best_per:.4f} ms/image at batch 256 (target < 0.1); "
            f"ONNX Runtime {eager / f32:.1f}x eager for one image (target >= 3)"
        )
    best = min(e2e, key=e2e.get)
    print(f"  end to end p50 {e2e[best]:.2f} ms ({best}; target < 1)")


if __name__ == "__main__":
    main()
