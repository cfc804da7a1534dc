"""The report figures as PNG (matplotlib, no display): the bytes of a report's figures,
written by the caller together with the report's other files, and RUN/curves.png."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pipeline.atomic import AGAIN, write_atomic


def _pyplot():
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # labels in scripts the installed fonts lack (Melon's Korean genre names) are drawn as
    # boxes; the report's CSV and JSON files hold them intact, so no warning per glyph
    warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
    return plt


def _png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        _pyplot().close(fig)
    return buf.getvalue()


def plot_confusion(cm: np.ndarray, names: list[str], title: str) -> bytes:
    """PNG: a row-normalised heat map, counts in the cells; legible with 16 labels."""
    plt = _pyplot()
    k = len(names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(5.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(k), names, fontsize=9)
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
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true label")
    fig.tight_layout()
    return _png(fig)


def plot_multilabel(
    rep: dict, y: np.ndarray, pred: np.ndarray, labels: list[str], title: str
) -> bytes:
    """PNG bytes of a multi-label report's figure, two panels.

    Left: per-label average precision, sorted (undefined labels greyed). Right: a label
    co-occurrence heat map of true (rows) against predicted (columns) label sets, each row
    normalised by the tracks holding that true label.

    Args:
        rep: the multi-label report (its per_label average precisions).
        y: uint8 [n, L] 0/1 true labels.
        pred: uint8 [n, L] 0/1 predicted labels.
        labels: the L label names.
        title: the figure's title.

    Returns:
        The PNG's bytes.
    """
    plt = _pyplot()
    k = len(labels)
    ap = [rep["per_label"][n]["average_precision"] for n in labels]
    order = sorted(range(k), key=lambda j: -1.0 if ap[j] is None else ap[j])
    co = y.T.astype(np.int64) @ pred.astype(np.int64)  # [true label, predicted label]
    norm = co / np.maximum(y.sum(axis=0)[:, None], 1)
    size = max(5.0, 0.45 * k + 3.0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(2 * size, size * 0.9), dpi=100)
    a.barh(
        range(k),
        [ap[j] or 0.0 for j in order],
        color=["lightgrey" if ap[j] is None else "tab:blue" for j in order],
    )
    a.set_yticks(
        range(k),
        [labels[j] + (" (no positives)" if ap[j] is None else "") for j in order],
        fontsize=8,
    )
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
    return _png(fig)


def plot_compare(figures, per, title: str) -> bytes:
    """PNG: mean ± std (error bars) with each input as a dot: the figures (left) and, when
    reports were given, F1 per label (right). ``figures``/``per``: `compare.tables`."""
    plt = _pyplot()
    runs = figures.drop(index=["mean", "std"])
    panels = [("figure", runs.T, figures.loc["mean"], figures.loc["std"])]
    if len(per.columns):
        cols = [c for c in per.columns if c not in ("mean", "std")]
        panels.append(("F1", per[cols], per["mean"], per["std"]))
    widths = [max(3.0, 0.5 * len(p[1]) + 1.5) for p in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(sum(widths) + 1, 4.5),
        dpi=100,
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    for ax, (ylabel, values, mean, std) in zip(axes[0], panels):
        x = np.arange(len(values))
        ax.bar(
            x,
            mean.fillna(0).to_numpy(),
            yerr=std.fillna(0).to_numpy(),
            capsize=3,
            color="tab:blue",
            alpha=0.6,
        )
        for j in range(values.shape[1]):
            ax.plot(x, values.iloc[:, j].to_numpy(), "o", color="black", markersize=3)
        ax.set_xticks(x, [str(i) for i in values.index], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, max(1.0, float(np.nanmax(values.to_numpy(dtype=float), initial=0))))
    fig.suptitle(title + " (bars: mean ± std; dots: each input)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def plot_curves(history: list[dict], select_by: str, path: Path, rerun: str = AGAIN) -> None:
    """Write RUN/curves.png: loss, the task's score and the learning rate against epoch.

    Panels: train/val loss, then accuracy (single-label) or validation mAP and ROC-AUC
    (multi-label), then the learning rate; a dotted line at the epoch best.pt holds (the
    first with the highest finite ``select_by``). Written atomically.

    Args:
        history: the metrics rows, one per epoch (keys as in metrics.csv).
        select_by: the figure that picks best.pt ("val_acc" draws the accuracy panel).
        path: where the PNG goes.
        rerun: how a write error's message ends (pipeline.atomic).
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]

    def series(key: str) -> list[float]:
        """The ``key`` column of ``history``, NaN where a row lacks it."""
        return [float(r.get(key, np.nan)) for r in history]

    if select_by == "val_acc":
        score = [("train_acc", "train accuracy"), ("val_acc", "validation accuracy")]
    else:
        score = [("val_map", "validation mAP"), ("val_macro_auc", "validation ROC-AUC")]
    panels = [
        ("loss", [("train_loss", "train"), ("val_loss", "validation")]),
        ("accuracy" if select_by == "val_acc" else "score", score),
        ("learning rate", [("lr", "lr")]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
    scored = [(e, v) for e, v in zip(epochs, series(select_by)) if np.isfinite(v)]
    best = max(scored, key=lambda ev: ev[1])[0] if scored else None  # first of the best
    for ax, (ylabel, lines) in zip(axes, panels):
        for key, label in lines:
            ax.plot(epochs, series(key), marker="o", markersize=3, label=label)
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    axes[1].set_ylim(0, 1.02)
    fig.suptitle(
        f"{len(epochs)} epochs" + (f"; best.pt: epoch {best}" if best else ""), fontsize=10
    )
    fig.tight_layout()
    write_atomic(path, _png(fig), rerun=rerun)
