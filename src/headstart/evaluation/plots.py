"""Pictures people would rather look at than read: learning curves and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def learning_curve(history: Sequence[dict[str, float]], path: Path, title: str) -> Path:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, what in ((ax1, "loss"), (ax2, "accuracy")):
        ax.plot(epochs, [h[f"train_{what}"] for h in history], marker="o", label="train")
        ax.plot(epochs, [h[f"val_{what}"] for h in history], marker="o", label="val")
        ax.set_xlabel("epoch"), ax.set_ylabel(what), ax.legend(), ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


LABELLED_MAX = 30  # up to this many classes: every cell written out; beyond: a compact view
TOP_PAIRS = 20


def confusion_matrix_png(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> Path:
    """The confusion matrix as a picture, of bounded size whatever the number of classes.

    Up to LABELLED_MAX classes: every cell with its count. Beyond (1,000 classes would make a
    60,000-pixel figure with a million labels): the matrix as a compact image (rows normalised, so a
    class's errors show whatever its size) beside a bar chart of the most confused pairs. The full
    matrix is kept as data next to the PNG (`<stem>.npz`: matrix, classes) in both cases."""
    np.savez_compressed(path.with_suffix(".npz"), matrix=matrix, classes=np.array(list(classes)))
    if len(classes) <= LABELLED_MAX:
        return _labelled(matrix, classes, path, title)
    return _compact(matrix, classes, path, title)


def most_confused(matrix: np.ndarray, classes: Sequence[str], k: int = TOP_PAIRS) -> list[tuple[str, str, int, float]]:
    """The `k` largest off-diagonal cells: (true, predicted, count, share of the true class's images)."""
    off = matrix.astype(np.int64, copy=True)
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    k = min(k, int(np.count_nonzero(flat)))
    if k == 0:
        return []
    top = np.argpartition(flat, -k)[-k:]
    top = top[np.argsort(-flat[top], kind="stable")]
    rows = matrix.sum(axis=1)
    n = matrix.shape[1]
    return [(classes[i // n], classes[i % n], int(flat[i]), float(flat[i] / max(1, rows[i // n]))) for i in top]


def _labelled(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> Path:
    plt = _pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    peak = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > peak / 2 else "black")
    ax.set_title(title)
    return _save(fig, path)


def _compact(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> Path:
    plt = _pyplot()
    n = len(classes)
    share = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    pairs = most_confused(matrix, classes)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 8), gridspec_kw={"width_ratios": [1, 1]})
    ax1.imshow(np.sqrt(share), cmap="Blues", interpolation="nearest", aspect="equal")  # sqrt: faint errors show
    ticks = np.linspace(0, n - 1, 6).round().astype(int)
    ax1.set_xticks(ticks, [str(t) for t in ticks]), ax1.set_yticks(ticks, [str(t) for t in ticks])
    ax1.set_xlabel("predicted class index"), ax1.set_ylabel("true class index")
    ax1.set_title(f"{n} classes, row-normalised (sqrt scale)")
    labels = [f"{_short(t)} -> {_short(p)}" for t, p, _, _ in pairs][::-1]
    ax2.barh(range(len(pairs)), [c for _, _, c, _ in pairs][::-1], color="tab:blue")
    ax2.set_yticks(range(len(pairs)), labels, fontsize=8)
    for y, (_, _, count, frac) in enumerate(pairs[::-1]):
        ax2.text(count, y, f" {count} ({frac:.0%})", va="center", fontsize=7)
    ax2.set_xlabel("images"), ax2.set_title(f"the {len(pairs)} most confused pairs (true -> predicted)")
    fig.suptitle(title)
    return _save(fig, path)


def _short(name: str, width: int = 24) -> str:
    return name if len(name) <= width else name[: width - 1] + "\u2026"
