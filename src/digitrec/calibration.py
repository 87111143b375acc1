"""Answers that mean something: a temperature that makes confidences honest, and the
"not sure" threshold read off the risk-coverage curve, both fitted on the validation split
and stored in the checkpoint's record (``calibration``), where the Predictor reads them for
PyTorch and ONNX Runtime alike.

Temperature scaling (Guo et al., 2017) divides the logits by one number: the argmax, and
so the accuracy, never changes. The threshold is the lowest confidence at which the answers
given keep their error rate within ``MAX_RISK``, as many answered as that allows.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from digitrec.checkpoint import copy_with_meta, load_model
from digitrec.data import load_dataset, split_indices, to_float
from digitrec.errors import CheckpointError, DigitrecError
from digitrec.export import export, onnx_path_for
from digitrec.models import LINE_MODEL, batched_logits
from digitrec.runs import read_config, resolve_checkpoint, split_of

MAX_RISK = 0.002  # errors allowed among the answers given without "not sure"
UNCERTAIN_BELOW = 0.6  # the "not sure" threshold of a model never calibrated: no measurement
BINS = 15  # equal-width confidence bins of the expected calibration error


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels``."""
    z, y = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(z / np.exp(log_t), y))

    # The NLL is convex in 1/T; a bounded scalar search finds it to 1e-6 in ~30 calls.
    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                           options={"xatol": 1e-6})  # fmt: skip
    return float(np.exp(best.x))


def calibration_bins(conf: np.ndarray, correct: np.ndarray) -> tuple[float, list[dict]]:
    """Expected calibration error over ``BINS`` equal-width confidence bins, and the bins."""
    edges = np.linspace(0.0, 1.0, BINS + 1)
    bins, ece = [], 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        count = int(mask.sum())
        acc = float(correct[mask].mean()) if count else 0.0
        mean_conf = float(conf[mask].mean()) if count else 0.0
        ece += count / max(len(conf), 1) * abs(acc - mean_conf)
        bins.append({"lo": float(lo), "hi": float(hi), "count": count, "accuracy": acc,
                     "confidence": mean_conf})  # fmt: skip
    return float(ece), bins


def risk_coverage(conf: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Answering only the most confident first: for each count answered, its share of all
    (coverage), the error rate among them (risk) and the confidence it reaches down to."""
    order = np.argsort(-conf, kind="stable")
    errors = np.cumsum(~correct[order])
    answered = np.arange(1, len(conf) + 1)
    return {"coverage": answered / len(conf), "risk": errors / answered,
            "threshold": conf[order]}  # fmt: skip


def threshold_for(conf: np.ndarray, correct: np.ndarray, max_risk: float = MAX_RISK) -> float:
    """The lowest confidence that still answers with at most ``max_risk`` errors: the
    largest coverage whose risk is within it (a tie at the cut answers all of its ties,
    so the cut moves above a tie that would break the risk)."""
    curve = risk_coverage(conf, correct)
    ok = np.flatnonzero(curve["risk"] <= max_risk)
    # Only cuts between distinct confidences can be applied as "confidence >= t".
    t = curve["threshold"]
    distinct = np.append(t[1:] < t[:-1], True)
    ok = ok[distinct[ok]]
    return float(t[ok[-1]]) if len(ok) else 1.0


def selective(conf: np.ndarray, correct: np.ndarray, threshold: float) -> dict[str, float]:
    """Coverage and risk of answering only at ``confidence >= threshold``."""
    answered = conf >= threshold
    n = int(answered.sum())
    return {"coverage": n / max(len(conf), 1),
            "risk": float((~correct[answered]).sum() / n) if n else 0.0}  # fmt: skip


def fit(logits: torch.Tensor, labels: torch.Tensor, max_risk: float = MAX_RISK) -> dict[str, Any]:
    """The ``calibration`` record of a model from its validation logits: temperature,
    threshold, and what they were measured to do there."""
    temperature = fit_temperature(logits, labels)
    y = labels.numpy()
    before = F.softmax(logits.double(), 1).numpy()
    after = F.softmax(logits.double() / temperature, 1).numpy()
    correct = before.argmax(1) == y
    conf = after.max(1)
    threshold = threshold_for(conf, correct, max_risk)
    return {
        "temperature": temperature,
        "uncertain_below": threshold,
        "max_risk": max_risk,
        "images": len(y),
        "val": {
            "ece_before": calibration_bins(before.max(1), correct)[0],
            "ece_after": calibration_bins(conf, correct)[0],
            "nll_before": float(F.cross_entropy(logits.double(), labels.long())),
            "nll_after": float(F.cross_entropy(logits.double() / temperature, labels.long())),
            **selective(conf, correct, threshold),
        },
    }


def validation_split(checkpoint: Path) -> tuple[int, int]:
    """The validation split (size, seed) a checkpoint's run held out: its config.json's,
    else the project's standard one (5,000 images, seed 0), which the shipped model's
    steps used."""
    if (checkpoint.parent / "config.json").is_file():
        return split_of(read_config(checkpoint.parent).get("settings") or {})
    return split_of({})


def calibrate_checkpoint(
    arg: str | Path,
    data_dir: str | None = None,
    max_risk: float = MAX_RISK,
    runs_root: Path | None = None,
) -> tuple[Path, dict[str, Any], list[Path]]:
    """Fit the calibration of ``arg`` (a checkpoint, a run under ``runs_root``, or
    ``default``) on its validation split and store it in the checkpoint; its ONNX exports
    are made again so they carry it. Returns the checkpoint, the record and the exports
    rewritten."""
    path = resolve_checkpoint(arg, runs_root)
    model, meta = load_model(path)
    if meta["model"] == LINE_MODEL or meta.get("reading"):
        raise CheckpointError(f"{path} reads numbers, not single digits: nothing to calibrate")
    if not 0 < max_risk < 1:
        raise DigitrecError(f"--max-risk {max_risk}: give a share of errors between 0 and 1")
    val_size, split_seed = validation_split(path)
    if val_size == 0:
        raise DigitrecError(f"{path} was trained on every image (--val-size 0): no validation "
                            "split is left to calibrate on")  # fmt: skip
    ds = load_dataset(meta.get("dataset", "mnist"), data_dir)
    _, val_idx = split_indices(len(ds.train_images), val_size, split_seed)
    logits = batched_logits(model, to_float(ds.train_images[val_idx]))
    record = fit(logits, ds.train_labels[val_idx], max_risk)
    record["split"] = {"val_size": val_size, "split_seed": split_seed}
    copy_with_meta(path, path, {"calibration": record})
    exports = [p for p in (onnx_path_for(path), onnx_path_for(path, True)) if p.is_file()]
    if exports:  # they recorded the checkpoint's hash, which has changed: made again
        export(path, quantize="int8" if onnx_path_for(path, True) in exports else None,
               data_dir=data_dir)  # fmt: skip
    return path, record, exports
