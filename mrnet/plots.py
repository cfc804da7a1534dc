"""The report figures as PNG files (matplotlib, no display), written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.atomic import write_atomic

RERUN = "rerun the same command"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    write_atomic(path, lambda f: fig.savefig(f, format="png"), rerun=RERUN)
    _pyplot().close(fig)


def plot_confusion(cm: np.ndarray, genres: list[str], path: Path, title: str) -> None:
    """Row-normalised heat map, counts in the cells; legible with 16 genres."""
    plt = _pyplot()
    k = len(genres)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(5.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), genres, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(k), genres, fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true genre")
    fig.tight_layout()
    _save(fig, path)




def plot_multilabel(rep: dict, y: np.ndarray, pred: np.ndarray, labels: list[str],
                    path: Path, title: str) -> None:  # fmt: skip
    """Two panels: per-label average precision, sorted (undefined labels greyed), and a
    label co-occurrence heat map of true (rows) against predicted (columns) label sets,
    each row normalised by the tracks holding that true label."""
    plt = _pyplot()
    k = len(labels)
    ap = [rep["per_label"][n]["average_precision"] for n in labels]
    order = sorted(range(k), key=lambda j: -1.0 if ap[j] is None else ap[j])
    co = y.T.astype(np.int64) @ pred.astype(np.int64)  # [true label, predicted label]
    norm = co / np.maximum(y.sum(axis=0)[:, None], 1)
    size = max(5.0, 0.45 * k + 3.0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(2 * size, size * 0.9), dpi=100)
    a.barh(range(k), [ap[j] or 0.0 for j in order],
           color=["lightgrey" if ap[j] is None else "tab:blue" for j in order])  # fmt: skip
    a.set_yticks(range(k), [labels[j] + (" (no positives)" if ap[j] is None else "")
                            for j in order], fontsize=8)  # fmt: skip
    a.set_xlim(0, 1)
    a.set_xlabel("average precision")
    a.set_title("per-label average precision", fontsize=10)
    im = b.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    b.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=8)
    b.set_yticks(range(k), labels, fontsize=8)
    b.set_xlabel("predicted label")
    b.set_ylabel("true label")
    b.set_title("tracks with the true label that got the predicted one", fontsize=10)
    fig.colorbar(im, ax=b, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _save(fig, path)
