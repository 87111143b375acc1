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
    """A grid of 28x28 images (N, 28, 28) with a caption under each."""
    n = max(len(images), 1)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=images[i].max() or 1)
            ax.set_title(titles[i], fontsize=8, color=colors[i] if colors else "black")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
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
    im = ax.imshow(np.where(np.eye(len(cm), dtype=bool), np.nan, rates), cmap="Reds")
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="black" if i != j else "tab:green",
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes[0]) > 2 else 0)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (colour: error rate off the diagonal)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save(fig, path)


def reliability_diagram(bins: Sequence[dict[str, float]], ece: float, path) -> None:
    """Accuracy against confidence per bin; a calibrated model follows the diagonal."""
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    lo = np.array([b["lo"] for b in bins])
    hi = np.array([b["hi"] for b in bins])
    acc = np.array([b["accuracy"] for b in bins])
    conf = np.array([b["confidence"] for b in bins])
    count = np.array([b["count"] for b in bins])
    mask = count > 0
    ax.bar(
        lo[mask], acc[mask], width=(hi - lo)[mask], align="edge", edgecolor="k", label="accuracy"
    )
    ax.bar(
        lo[mask],
        (conf - acc)[mask],
        bottom=acc[mask],
        width=(hi - lo)[mask],
        align="edge",
        color="tab:red",
        alpha=0.4,
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE {ece:.4f})")
    ax.legend(loc="upper left")
    ax2.bar(lo, count, width=hi - lo, align="edge", color="tab:gray")
    ax2.set_yscale("log")
    ax2.set_xlabel("confidence")
    ax2.set_ylabel("images")
    fig.tight_layout()
    save(fig, path)
