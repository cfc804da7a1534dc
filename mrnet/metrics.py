"""Report figures, all through scikit-learn, shared by validation and `mrnet evaluate`.

Single-label (`single_label_report`): y int [n] label indices, probs float [n, K] softmax.
Multi-label: y uint8 [n, L] 0/1 (the labels of each track), probs float [n, L] sigmoids.
A label with no positive track (or, for ROC-AUC, no negative one) among the ``n`` has no
defined figure: it is None, and averages skip it (so an empty split gives None too).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics


def single_label_report(y_true: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """All report figures from labels [n] and probabilities [n, K] (scikit-learn)."""
    k = len(names)
    labels = list(range(k))
    y_pred = probs.argmax(1)
    p, r, f, s = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    cm = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "task": "single",
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
            for i, g in enumerate(names)
        },
        "confusion": {"labels": list(names), "matrix": cm.tolist()},
    }


def most_confused(cm: np.ndarray, names: list[str], n: int = 3) -> list[tuple[str, str, int]]:
    """The n largest off-diagonal cells as (true, predicted, count), count > 0."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:n]
    pairs = [(names[i // len(names)], names[i % len(names)], int(off.flat[i])) for i in order]
    return [p for p in pairs if p[2] > 0]


def _defined(y: np.ndarray, auc: bool = False) -> np.ndarray:
    """Labels (columns) whose figure is defined: with positives (and negatives for AUC)."""
    pos = y.sum(axis=0)
    return (pos > 0) & (pos < len(y)) if auc else pos > 0


def average_precisions(y: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """Per label, the average precision (PR-AUC) of probs [n, L] for y [n, L]; None if undefined."""
    ok = _defined(y)
    return [
        float(metrics.average_precision_score(y[:, j], probs[:, j])) if ok[j] else None
        for j in range(y.shape[1])
    ]


def roc_aucs(y: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """Per label, the ROC-AUC of probs [n, L] for y [n, L]; None if undefined."""
    ok = _defined(y, auc=True)
    return [
        float(metrics.roc_auc_score(y[:, j], probs[:, j])) if ok[j] else None
        for j in range(y.shape[1])
    ]


def mean_defined(values: list[float | None]) -> float | None:
    """The mean of the values that are not None; None when all are."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def micro_auc(y: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC-AUC over every (track, label) pair."""
    flat = y.ravel()
    if flat.min(initial=1) == flat.max(initial=0):
        return None
    return float(metrics.roc_auc_score(flat, probs.ravel()))


def choose_thresholds(
    y: np.ndarray, probs: np.ndarray, prior: np.ndarray | None = None
) -> list[float]:
    """Per label, a probability threshold that maximises F1 on (y, probs). Chosen on the
    validation split and applied to others, so it lies halfway between the best cut's
    score and the next lower score seen (the same F1 here, with a margin) rather than on
    a validation track's score itself.

    A label without positives in ``y`` cannot be fitted: with ``prior`` (each label's
    training frequency) its threshold predicts it for about that fraction of the tracks
    (never, for a label no training track has); without, 0.5."""
    out = []
    for j in range(y.shape[1]):
        if not y[:, j].any():
            if prior is None or not len(y):
                out.append(0.5)
            elif prior[j] <= 0:
                out.append(1.0)  # never seen in training: never predicted
            else:
                out.append(float(np.quantile(probs[:, j], 1 - prior[j])))
            continue
        p, r, t = metrics.precision_recall_curve(y[:, j], probs[:, j])
        f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
        best = int(np.argmax(f1))  # t ascends: t[best - 1] is the next lower score
        out.append(float((t[best] + t[best - 1]) / 2 if best > 0 else t[best] / 2))
    return out


def validation_figures(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """What training logs per epoch: mAP (macro PR-AUC) and macro ROC-AUC (NaN when
    undefined, e.g. no validation split)."""
    ap, auc = mean_defined(average_precisions(y, probs)), mean_defined(roc_aucs(y, probs))
    return {
        "val_map": float("nan") if ap is None else ap,
        "val_macro_auc": float("nan") if auc is None else auc,
    }


def multilabel_report(
    y: np.ndarray, probs: np.ndarray, thresholds: list[float], labels: list[str]
) -> dict:
    """Every figure of a multi-label report (see mrnet.evaluate).

    Args:
        y: uint8 [n, L] 0/1 truth.
        probs: float [n, L] sigmoid probabilities.
        thresholds: per label, the probability at or above which it is predicted.
        labels: the L label names.

    Returns:
        The report dict: averages (None where undefined), n_tracks and per-label figures
        (F1, precision and recall None for a label without positives).
    """
    pred = (probs >= np.asarray(thresholds)[None, :]).astype(np.uint8)
    ap, auc = average_precisions(y, probs), roc_aucs(y, probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined F1 of empty label sets: 0 by definition
        p, r, f, s = metrics.precision_recall_fscore_support(y, pred, zero_division=0)
        sample_f1 = float(metrics.f1_score(y, pred, average="samples", zero_division=0))
    return {
        "task": "multi",
        "mean_average_precision": mean_defined(ap),
        "macro_roc_auc": mean_defined(auc),
        "micro_roc_auc": micro_auc(y, probs),
        "sample_f1": sample_f1 if len(y) else None,
        "n_tracks": int(len(y)),
        "per_label": {
            name: {
                "roc_auc": auc[j],
                "average_precision": ap[j],
                "f1": float(f[j]) if s[j] else None,
                "precision": float(p[j]) if s[j] else None,
                "recall": float(r[j]) if s[j] else None,
                "support": int(s[j]),
                "threshold": float(thresholds[j]),
            }
            for j, name in enumerate(labels)
        },
    }
