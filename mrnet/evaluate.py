"""`mrnet evaluate`: whole-track inference on a cache split, metrics, per-genre reports.

REPORT/
  report.json      accuracy, balanced_accuracy, macro_f1, weighted_f1, top2_accuracy,
                   n_tracks, per_genre {precision, recall, f1, support}, confusion
                   {labels, matrix}, source {checkpoint, cache, split, feature_config}
  confusion.csv    counts; rows = true genre, columns = predicted genre
  confusion.png    row-normalised heat map with counts in the cells
  per_genre.csv    genre, precision, recall, f1, support
  predictions.csv  track_id, true, predicted, confidence, p_<genre>..., [artist, title]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import metrics
from tqdm import tqdm

from mrnet import checkpoint as ckpt_io
from mrnet.data import whole_tracks
from mrnet.options import EvalOptions
from mrnet.runtime import autocast, resolve_device
from pipeline.atomic import write_atomic, writing
from pipeline.cache.layout import EXTRA_COLUMNS
from pipeline.cache.reader import Cache, open_cache, split_index
from pipeline.errors import BadInput

RERUN = "rerun the same command"  # what ends a disk-fault message: nothing to resume


@torch.no_grad()
def predict_split(
    model: torch.nn.Module,
    cache: Cache,
    split: str,
    device: torch.device,
    batch_size: int,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-track class probabilities for a split.

    Tracks of equal length go through together (most FMA clips have the same length),
    at most ``batch_size`` longest-track's worth of frames per forward pass.
    Returns (track_id int64 [n], label int64 [n], probs float32 [n, n_classes]) in the
    order of the cache's tracks.csv.
    """
    index = split_index(cache, split)
    probs = np.zeros((len(index), len(cache.labels)), np.float32)
    bar = tqdm(total=len(index), unit="track", desc=f"evaluate {split}", disable=not progress)
    for rows, x, _ in whole_tracks(index, batch_size * int(index.length.max())):
        with autocast(device):
            logits = model(x.to(device))
        probs[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        bar.update(len(rows))
    bar.close()
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        ids = " ".join(str(t) for t in index.track_id[bad][:10].tolist())
        raise BadInput(
            f"the model's outputs are NaN or infinite for {int(bad.sum())} tracks of split "
            f"{split} (e.g. {ids}); check the cache with `mrnet verify {cache.root}`"
        )
    return index.track_id, index.label, probs


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, genres: list[str]) -> dict:
    """All report figures from labels [n] and probabilities [n, K] (scikit-learn)."""
    k = len(genres)
    labels = list(range(k))
    y_pred = probs.argmax(1)
    p, r, f, s = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    cm = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            metrics.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        # With two classes or fewer the truth is always among the top two.
        "top2_accuracy": float(metrics.top_k_accuracy_score(y_true, probs, k=2, labels=labels))
        if k > 2
        else 1.0,
        "n_tracks": int(len(y_true)),
        "per_genre": {
            g: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, g in enumerate(genres)
        },
        "confusion": {"labels": list(genres), "matrix": cm.tolist()},
    }


def most_confused(cm: np.ndarray, genres: list[str], n: int = 3) -> list[tuple[str, str, int]]:
    """The n largest off-diagonal cells as (true, predicted, count), count > 0."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:n]
    pairs = [(genres[i // len(genres)], genres[i % len(genres)], int(off.flat[i])) for i in order]
    return [p for p in pairs if p[2] > 0]


def plot_confusion(cm: np.ndarray, genres: list[str], path: Path, title: str) -> None:
    """Row-normalised heat map, counts in the cells; legible with 16 genres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    write_atomic(path, lambda f: fig.savefig(f, format="png"), rerun=RERUN)
    plt.close(fig)


def format_table(rep: dict) -> str:
    lines = [f"{'genre':<20} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for g, m in rep["per_genre"].items():
        lines.append(
            f"{g:<20} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f} {m['support']:8d}"
        )
    lines.append(
        f"accuracy {rep['accuracy']:.3f}  balanced {rep['balanced_accuracy']:.3f}  "
        f"macro F1 {rep['macro_f1']:.3f}  weighted F1 {rep['weighted_f1']:.3f}  "
        f"top-2 {rep['top2_accuracy']:.3f}  ({rep['n_tracks']} tracks)"
    )
    cm = np.array(rep["confusion"]["matrix"])
    pairs = most_confused(cm, rep["confusion"]["labels"])
    if pairs:
        lines.append("most confused: " + "; ".join(f"{a} -> {b} ({n})" for a, b, n in pairs))
    return "\n".join(lines)


def evaluate(opts: EvalOptions) -> dict:
    """Run the evaluation and write REPORT/; returns the report dict."""
    if opts.out.exists() and not opts.out.is_dir():
        raise BadInput(f"--out {opts.out} is a file; pass a directory for the report")
    if opts.batch_size < 1:
        raise BadInput(f"--batch-size must be at least 1 (got {opts.batch_size})")
    device = resolve_device(opts.device)
    ckpt = ckpt_io.load(opts.checkpoint)
    cache = open_cache(opts.cache)
    ckpt.check_cache(
        cache,
        f"checkpoint {opts.checkpoint}",
        fix="evaluate on a cache built with the same settings and subset",
    )
    if cache.split(opts.split).empty:
        known = sorted(set(cache.tracks["split"]))
        raise BadInput(
            f"split {opts.split!r} of cache {opts.cache} has no tracks; use one of {known}"
        )
    model = ckpt_io.load_model(ckpt).to(device).eval()
    genres = list(cache.labels)
    track_id, y_true, probs = predict_split(
        model, cache, opts.split, device, opts.batch_size, opts.progress
    )
    rep = compute_metrics(y_true, probs, genres)
    rep["source"] = {
        "checkpoint": str(opts.checkpoint),
        "cache": str(opts.cache),
        "split": opts.split,
        "epoch": ckpt.epoch,
        "arch": ckpt.arch,
        "feature_config": cache.feature_config,
    }
    with writing(opts.out, rerun=RERUN):
        opts.out.mkdir(parents=True, exist_ok=True)
    write_atomic(opts.out / "report.json", json.dumps(rep, indent=2) + "\n", RERUN)
    cm = np.array(rep["confusion"]["matrix"])
    confusion = pd.DataFrame(cm, index=pd.Index(genres, name="true"), columns=genres)
    write_atomic(opts.out / "confusion.csv", confusion.to_csv(), RERUN)
    per_genre = pd.DataFrame.from_dict(rep["per_genre"], orient="index").rename_axis("genre")
    write_atomic(opts.out / "per_genre.csv", per_genre.to_csv(), RERUN)
    pred = pd.DataFrame(
        {
            "track_id": track_id,
            "true": [genres[i] for i in y_true],
            "predicted": [genres[i] for i in probs.argmax(1)],
            "confidence": probs.max(1),
        }
    )
    for i, g in enumerate(genres):
        pred[f"p_{g}"] = probs[:, i]
    shown = [c for c in EXTRA_COLUMNS if c in cache.tracks.columns]  # copied at preprocess
    if shown:
        pred = pred.join(cache.tracks.set_index("track_id")[shown], on="track_id")
    write_atomic(
        opts.out / "predictions.csv", pred.to_csv(index=False, float_format="%.6f"), RERUN
    )
    plot_confusion(
        cm,
        genres,
        opts.out / "confusion.png",
        f"{opts.split}: accuracy {rep['accuracy']:.3f}, {len(y_true)} tracks",
    )
    return rep
