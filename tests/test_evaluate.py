import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from digitrec.checkpoint import load_model
from digitrec.data import to_float
from digitrec.evaluate import confused_pairs, evaluate


def test_confused_pairs_are_sorted_off_diagonal():
    cm = np.array([[50, 3, 0], [1, 40, 7], [0, 0, 9]])
    pairs = confused_pairs(cm, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("b", "c", 7),
        ("a", "b", 3),
        ("b", "a", 1),
    ]


@pytest.mark.slow
def test_full_report_on_the_real_test_set(trained_run, mnist, tmp_path):
    model, meta = load_model(trained_run.run_dir / "best.safetensors")
    report = evaluate(model, meta, mnist, tmp_path, source="best")
    with torch.no_grad():
        pred = model(to_float(mnist.test_images)).argmax(1)
    manual = (pred == mnist.test_labels).float().mean().item()
    assert report["accuracy"] == pytest.approx(manual, abs=1e-6)
    assert report["accuracy"] >= 0.985
    cm = np.array(report["confusion_matrix"])
    assert cm.sum() == 10000 and np.trace(cm) == 10000 - report["errors"]
    cr = report["classification_report"]
    assert cr["3"]["support"] == 1010 and 0.9 < cr["macro avg"]["f1-score"] <= 1
    # calibrated by its run: the temperature's ECE beats the model's own, same answers
    assert 0 <= report["ece"] < report["uncalibrated"]["ece"] <= 1
    assert report["temperature"] == meta["calibration"]["temperature"]
    sure = report["not_sure"]
    assert sure["measured"] and sure["threshold"] == meta["calibration"]["uncertain_below"]
    assert 0.5 < sure["coverage"] < 1 and sure["risk"] < 1 - report["accuracy"]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["accuracy"] == report["accuracy"]
    rows = (tmp_path / "confusion.csv").read_text().splitlines()
    assert len(rows) == 11 and rows[1].startswith("0,")
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "chosen on the validation split from its risk-coverage curve" in html
    for png in ("confusion.png", "misclassified.png", "reliability.png", "risk_coverage.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tta_report_scores_the_mean_of_the_views(trained_run, mnist, tmp_path):
    """Worked out view by view here, so the batched, view-major averaging is checked."""
    from digitrec.augment import tta_matrices, tta_views

    model, meta = load_model(trained_run.run_dir / "best.safetensors")
    n = 2000  # of the test set: what is checked is the averaging, not the figure
    part = replace(mnist, test_images=mnist.test_images[:n], test_labels=mnist.test_labels[:n])
    report = evaluate(model, meta, part, tmp_path, source="best", tta=True)
    x = to_float(part.test_images)
    t = meta["calibration"]["temperature"]  # each view's probabilities, calibrated
    with torch.no_grad():
        probs = sum(
            torch.softmax(model(tta_views(x, m[None])) / t, dim=1) for m in tta_matrices()
        ) / len(tta_matrices())
    manual = (probs.argmax(1) == part.test_labels).float().mean().item()
    assert report["tta"] is True
    assert report["accuracy"] == pytest.approx(manual, abs=1e-6)
    plain = evaluate(model, meta, part, tmp_path / "plain", source="best")
    assert plain["tta"] is False and plain["accuracy"] != report["accuracy"]


def test_report_figures_are_readable(tmp_path, monkeypatch):
    """Counts on the darkest confusion cells in white; every bar of the reliability chart
    named in its legend; the prediction grid's captions clear of the row above."""
    from digitrec import plots

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    cm = np.diag([100] * 10)
    cm[2, 7], cm[4, 9] = 9, 1
    plots.confusion_heatmap(cm, [str(d) for d in range(10)], tmp_path / "c.png")
    texts = {t.get_text(): t.get_color() for t in figures[-1].axes[0].texts}
    assert texts["9"] == "white" and texts["1"] == "black"
    bins = [{"lo": lo, "hi": lo + 0.1, "accuracy": acc, "confidence": lo + 0.05, "count": 5}
            for lo, acc in ((0.5, 0.9), (0.8, 0.6))]  # fmt: skip
    plots.reliability_diagram({"as trained": (bins, 0.1)}, tmp_path / "r.png")
    legend = [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()]
    assert any(t.startswith("overconfident") for t in legend)
    assert any(t.startswith("underconfident") for t in legend)
    plots.image_grid(np.zeros((20, 28, 28)), ["7 (7)"] * 20, tmp_path / "g.png")
    fig = figures[-1]
    fig.canvas.draw()
    axes = fig.axes
    for above, below in zip(axes[:10], axes[10:], strict=True):
        title = below.title.get_window_extent()
        assert title.y1 <= above.get_window_extent().y0  # display y grows upwards
