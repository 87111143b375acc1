"""Every figure digitrec draws, each written atomically as a PNG.

matplotlib runs on the Agg backend (no display needed); figures are closed after
saving so long training runs do not accumulate them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from digitrec.files import write_bytes


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save(fig, path: str | Path) -> None:
    write_bytes(path, png_bytes(fig))


def training_curves(history: Sequence[dict[str, float]], path: str | Path) -> None:
    """Loss, accuracy and seconds per epoch, train beside validation."""
    epochs = [int(r["epoch"]) for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in ((axes[0], "loss", "Loss"), (axes[1], "acc", "Accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train")
        if all(r[f"val_{key}"] is not None for r in history):  # None: --val-size 0
            ax.plot(epochs, [r[f"val_{key}"] for r in history], "o-", label="validation")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[2].bar(epochs, [r["seconds"] for r in history], color="tab:gray")
    axes[2].set_title("Seconds per epoch")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    save(fig, path)


def image_grid(
    images: np.ndarray,
    titles: Sequence[str],
    path: str | Path,
    cols: int = 10,
    colors: Sequence[str] | None = None,
    suptitle: str = "",
) -> None:
    """A grid of 28x28 images (N, 28, 28), each captioned above; the constrained layout
    keeps a row's captions clear of the row above (tight_layout let them touch)."""
    n = max(len(images), 1)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.15, rows * 1.45 + 0.4),
                             squeeze=False, layout="constrained")  # fmt: skip
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=images[i].max() or 1)
            ax.set_title(titles[i], fontsize=8, color=colors[i] if colors else "black")
    if suptitle:
        fig.suptitle(suptitle)
    save(fig, path)


def class_distribution(counts: dict[str, Sequence[int]], classes: Sequence[str], path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(counts)
    x = np.arange(len(classes))
    for i, (name, c) in enumerate(counts.items()):
        ax.bar(x + i * width, c, width, label=name)
    ax.set_xticks(
        x + width * (len(counts) - 1) / 2, classes, rotation=30 if len(classes[0]) > 2 else 0
    )
    ax.set_ylabel("images")
    ax.set_ylim(0, 1.2 * max(max(c) for c in counts.values()))
    ax.set_title("Images per class")
    ax.legend(loc="upper right", ncol=len(counts))
    fig.tight_layout()
    save(fig, path)


def confusion_heatmap(cm: np.ndarray, classes: Sequence[str], path) -> None:
    """Counts in each cell; the colour is the row-normalized rate so errors stand out."""
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    off = np.where(np.eye(len(cm), dtype=bool), np.nan, rates)
    im = ax.imshow(off, cmap="Reds")
    dark = 0.5 * np.nanmax(off) if np.nanmax(off) > 0 else np.inf  # white text from here up
    for i in range(len(cm)):
        for j in range(len(cm)):
            colour = "tab:green" if i == j else "white" if off[i, j] >= dark else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes[0]) > 2 else 0)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (colour: error rate off the diagonal)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save(fig, path)


def reliability_diagram(panels: dict[str, tuple[Sequence[dict[str, float]], float]], path) -> None:
    """Accuracy against confidence per bin, one column per ``panels`` entry (title: bins,
    ECE); a calibrated model follows the diagonal. Below, how many images each bin holds."""
    fig, axes = plt.subplots(
        2, len(panels), figsize=(5 * len(panels), 6), squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]}, sharex=True,
    )  # fmt: skip
    for (title, (bins, ece)), ax, ax2 in zip(panels.items(), axes[0], axes[1], strict=True):
        lo = np.array([b["lo"] for b in bins])
        width = np.array([b["hi"] for b in bins]) - lo
        acc = np.array([b["accuracy"] for b in bins])
        conf = np.array([b["confidence"] for b in bins])
        count = np.array([b["count"] for b in bins])
        m = count > 0
        ax.bar(lo[m], acc[m], width=width[m], align="edge", edgecolor="k",
               label="accuracy of the bin's answers")  # fmt: skip
        # The gap to the bin's mean confidence: above the bar when the model claims more
        # than it gets right, hatched inside it when it gets more right than it claims.
        over, under = m & (conf > acc), m & (conf < acc)
        if over.any():
            ax.bar(lo[over], (conf - acc)[over], bottom=acc[over], width=width[over],
                   align="edge", color="tab:red", alpha=0.4,
                   label="overconfident: mean confidence above accuracy")  # fmt: skip
        if under.any():
            ax.bar(lo[under], (acc - conf)[under], bottom=conf[under], width=width[under],
                   align="edge", fill=False, hatch="///", edgecolor="tab:orange", linewidth=0,
                   label="underconfident: accuracy above mean confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.4)  # room for the legend above the bars
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_title(f"{title}: ECE {ece:.4f}")
        ax.legend(loc="upper left", fontsize=8)
        ax2.bar(lo, count, width=width, align="edge", color="tab:gray", label="images per bin")
        ax2.set_yscale("log")
        ax2.set_xlabel("confidence")
        ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save(fig, path)


def risk_coverage(curve: dict[str, np.ndarray], threshold: float, path) -> None:
    """The error rate among the answers given against the share answered, most confident
    first, and the operating point of the "not sure" threshold."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["coverage"], 100 * curve["risk"], lw=1.5, label="answering the most confident")
    answered = curve["threshold"] >= threshold
    if answered.any():
        k = int(np.flatnonzero(answered)[-1])
        cov, risk = curve["coverage"][k], 100 * curve["risk"][k]
        note = f"'not sure' below {threshold:.3f}: {cov:.1%} answered, {risk:.2f}% wrong"
        ax.plot([cov], [risk], "o", color="tab:red", label=note)
    ax.set_xlabel("share of images answered (coverage)")
    ax.set_ylabel("errors among the answered (%)")
    ax.set_xlim(0.8, 1.0)
    top = 100 * float(curve["risk"][-1]) if len(curve["risk"]) else 1.0
    ax.set_ylim(0, max(1.5 * top, 0.1))
    ax.set_title("Risk-coverage")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path)
