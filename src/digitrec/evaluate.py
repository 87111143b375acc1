"""Evaluation on the test set: every number and figure a practitioner looks at.

Writes into one directory: ``report.json`` (all numbers), ``confusion.csv``,
``confusion.png``, ``misclassified.png``, ``reliability.png`` and a
self-contained ``report.html`` that embeds the figures.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import classification_report, confusion_matrix
from torch import nn

from digitrec import plots
from digitrec.augment import tta_matrices, tta_probabilities
from digitrec.calibration import UNCERTAIN_BELOW, calibration_bins, risk_coverage, selective
from digitrec.data import Dataset, to_float
from digitrec.files import write_json, write_text
from digitrec.models import batched_logits
from digitrec.records import now


def confused_pairs(cm: np.ndarray, classes: list[str], top: int = 10) -> list[dict[str, Any]]:
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:top]
    pairs = []
    for flat in order:
        t, p = np.unravel_index(flat, cm.shape)
        if off[t, p] == 0:
            break
        pairs.append({"true": classes[t], "predicted": classes[p], "count": int(off[t, p])})
    return pairs


def evaluate(
    model: nn.Module,
    meta: dict[str, Any],
    data: Dataset,
    out_dir: Path,
    source: str = "",
    tta: bool = False,
) -> dict[str, Any]:
    """Score ``model`` on the test split of ``data`` and write the report into ``out_dir``.

    ``tta`` scores the mean probabilities over the Predictor's test-time views, so the
    figure matches what ``predict --tta`` and the server do with the same model.
    """
    classes = list(data.spec.classes)
    x, y = to_float(data.test_images), data.test_labels
    cal = meta.get("calibration") or {}
    temperature = float(cal.get("temperature", 1.0))
    t0 = time.perf_counter()
    if tta:
        views, step = tta_matrices(), 1000
        probs = torch.cat([
            tta_probabilities(lambda v: batched_logits(model, v) / temperature,
                              x[i : i + step], views)
            for i in range(0, len(x), step)
        ])  # fmt: skip
        logits = probs.clamp_min(1e-12).log()  # cross-entropy of the averaged probabilities
        raw = None
    else:
        raw = batched_logits(model, x)
        logits = raw / temperature
        probs = F.softmax(logits, dim=1)
    seconds = time.perf_counter() - t0
    conf_t, pred_t = probs.max(1)
    pred, conf, y_np = pred_t.numpy(), conf_t.numpy(), y.numpy()
    correct = pred == y_np

    cm = confusion_matrix(y_np, pred, labels=list(range(len(classes))))
    per_class = classification_report(
        y_np,
        pred,
        labels=list(range(len(classes))),
        target_names=classes,
        output_dict=True,
        zero_division=0,
    )
    ece, bins = calibration_bins(conf, correct)
    before = None
    if cal and raw is not None:
        ece_raw, bins_raw = calibration_bins(F.softmax(raw, 1).max(1).values.numpy(), correct)
        before = {"ece": ece_raw, "calibration_bins": bins_raw,
                  "loss": float(F.cross_entropy(raw, y).item())}  # fmt: skip
    threshold = float(cal.get("uncertain_below", UNCERTAIN_BELOW))
    report: dict[str, Any] = {
        "model": meta.get("model"),
        "checkpoint": source,
        "run": meta.get("run"),
        "dataset": data.spec.name,
        "split": "test",
        "tta": tta,
        "images": len(y_np),
        "accuracy": float(correct.mean()),
        "errors": int((~correct).sum()),
        "loss": float(F.cross_entropy(logits, y).item()),
        "classification_report": per_class,
        "confusion_matrix": cm.tolist(),
        "most_confused": confused_pairs(cm, classes),
        "ece": ece,
        "calibration_bins": bins,
        "temperature": temperature,
        "uncalibrated": before,
        "not_sure": {
            "threshold": threshold,
            "measured": bool(cal),
            **selective(conf, correct, threshold),
        },
        "inference_seconds": seconds,
        "evaluated": now(),
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true\\predicted", *classes])
    for name, row in zip(classes, cm, strict=True):
        w.writerow([name, *row.tolist()])
    write_text(out_dir / "confusion.csv", buf.getvalue())
    plots.confusion_heatmap(cm, classes, out_dir / "confusion.png")
    panels = {"as trained (T = 1)": (before["calibration_bins"], before["ece"])} if before else {}
    panels[f"calibrated (T = {temperature:.3f})" if cal else "not calibrated"] = (bins, ece)
    plots.reliability_diagram(panels, out_dir / "reliability.png")
    plots.risk_coverage(risk_coverage(conf, correct), threshold, out_dir / "risk_coverage.png")

    wrong = np.flatnonzero(~correct)
    wrong = wrong[np.argsort(-conf[wrong])][:60]  # the most confident mistakes first
    plots.image_grid(
        data.test_images[torch.from_numpy(wrong)].numpy() if len(wrong) else np.zeros((0, 28, 28)),
        [f"{classes[y_np[i]]}→{classes[pred[i]]} {conf[i]:.0%}" for i in wrong],
        out_dir / "misclassified.png",
        suptitle=f"Misclassified test images (true→predicted, confidence): "
        f"{len(wrong)} of {int((~correct).sum())}",
    )
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.html", render_html(report, out_dir))
    return report


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _before(r: dict[str, Any]) -> str:
    b = r.get("uncalibrated")
    if not b:  # never calibrated, or with test-time views (no single set of logits)
        return "" if r["not_sure"]["measured"] else " (no temperature fitted: `digitrec calibrate`)"
    return (f" with its temperature {r['temperature']:.3f} (as trained: ECE {b['ece']:.4f}, "
            f"loss {b['loss']:.4f})")  # fmt: skip


def _not_sure(n: dict[str, Any]) -> str:
    how = ("chosen on the validation split from its risk-coverage curve" if n["measured"]
           else "a fixed default: this model was never calibrated")  # fmt: skip
    return (
        f'Answers under {n["threshold"]:.3f} confidence say "not sure" ({how}). '
        f"On the test set it answers {n['coverage']:.2%} of the images, with "
        f"{n['risk']:.3%} of those answers wrong."
    )


def render_html(r: dict[str, Any], out_dir: Path) -> str:
    """One self-contained page: numbers as tables, figures embedded as data URIs."""
    rows = []
    for name, m in r["classification_report"].items():
        if isinstance(m, dict):
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{m['precision']:.4f}</td>"
                f"<td>{m['recall']:.4f}</td><td>{m['f1-score']:.4f}</td>"
                f"<td>{int(m['support'])}</td></tr>"
            )
    pairs = "".join(
        f"<tr><td>{html.escape(p['true'])}</td><td>{html.escape(p['predicted'])}</td>"
        f"<td>{p['count']}</td></tr>"
        for p in r["most_confused"]
    )
    title = f"digitrec evaluation: {r['model']} on {r['dataset']} test"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }}
.big {{ font-size: 2em; font-weight: 600; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Checkpoint <code>{html.escape(str(r["checkpoint"]))}</code>, evaluated {r["evaluated"]}.</p>
<p class="big">Accuracy {r["accuracy"]:.2%}</p>
<p>{r["errors"]} errors in {r["images"]} test images; loss {r["loss"]:.4f};
expected calibration error {r["ece"]:.4f}{_before(r)}.</p>
<h2>Classification report</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{"".join(rows)}</table>
<h2>Confusion matrix</h2>{_img(out_dir / "confusion.png")}
<h2>Most confused pairs</h2>
<table><tr><th>true</th><th>predicted</th><th>count</th></tr>{pairs}</table>
<h2>Misclassified examples</h2>{_img(out_dir / "misclassified.png")}
<h2>Calibration</h2>{_img(out_dir / "reliability.png")}
<h2>"Not sure"</h2>
<p>{_not_sure(r["not_sure"])}</p>
{_img(out_dir / "risk_coverage.png")}
</body></html>
"""
