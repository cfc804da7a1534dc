"""`mrnet evaluate`: track-level inference on a cache split, metrics, reports.

A track is scored whole when it is at most ``--window`` long, else as the mean
probability of its windows (mrnet.scoring): memory does not grow with track length.

Single-label caches, REPORT/:
  report.json      accuracy, balanced_accuracy, macro_f1, weighted_f1, top2_accuracy,
                   n_tracks, per_genre {precision, recall, f1, support}, confusion
                   {labels, matrix}, source {checkpoint, cache, split, feature_config}
  confusion.csv    counts; rows = true genre, columns = predicted genre
  confusion.png    row-normalised heat map with counts in the cells
  per_genre.csv    genre, precision, recall, f1, support
  predictions.csv  track_id, true, predicted, confidence, p_<genre>..., [artist, title]

Multi-label caches, REPORT/:
  report.json      mean_average_precision (macro PR-AUC), macro_roc_auc, micro_roc_auc,
                   sample_f1, n_tracks, per_label {roc_auc, average_precision, f1,
                   precision, recall, support, threshold} (null where undefined),
                   thresholds_from, source
  per_label.csv    the per_label table
  labels.png       per-label average precision; true vs predicted label co-occurrence
  predictions.csv  track_id, true, predicted ("|"-joined label sets), p_<label>...
                   (to 9 significant digits: every figure recomputes from it)

A multi-label track's predicted labels are those whose probability reaches the label's
threshold, chosen (maximum F1) on the cache's validation split; 0.5 when it is empty.

Every file is written whole under a temporary name before any is replaced, report.json
renamed into place last: a disk fault on a rerun keeps the previous report whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mrnet import checkpoint as ckpt_io
from mrnet.metrics import (
    choose_thresholds,
    most_confused,
    multilabel_report,
    single_label_report,
)
from mrnet.options import EvalOptions
from mrnet.plots import plot_confusion, plot_multilabel
from mrnet.runtime import resolve_device
from mrnet.scoring import model_forward, split_means, window_frames
from pipeline.atomic import AGAIN, write_together, writing
from pipeline.cache.layout import EXTRA_COLUMNS
from pipeline.cache.reader import Cache, SplitIndex, open_cache, split_index
from pipeline.cache.verify import check_checksums
from pipeline.errors import BadInput
from pipeline.settings import check_choices


def score_split(
    model: torch.nn.Module,
    index: SplitIndex,
    multi: bool,
    device: torch.device,
    batch_size: int,
    window: int,
    desc: str = "evaluate",
    progress: bool = True,
) -> np.ndarray:
    """Probabilities for the tracks of ``index``, in its order: float32 [n, n_labels],
    the mean over a track's windows (``window`` frames, 0: whole tracks; see
    mrnet.scoring) of the softmax (single-label) or sigmoid (multi-label) of the logits.

    Windows of equal length go through together, ``batch_size`` windows' worth of frames
    per forward pass, so memory does not grow with track length. BadInput when an
    output is not finite.
    """
    forward = model_forward(model.eval(), device, multi)
    probs = split_means(index, forward, window, batch_size, "outputs", desc, progress)
    return probs.astype(np.float32)


def format_table(rep: dict) -> str:
    """The report as a table for the terminal, the baseline's figures below it."""
    table = _format_multi(rep) if rep.get("task") == "multi" else _format_single(rep)
    base = rep.get("baseline")
    if base and "note" in base:
        return f"{table}\nbaseline: none ({base['note']})"
    if base:
        shown = ("mean_average_precision", "mAP") if rep.get("task") == "multi" else (
            "accuracy", "accuracy")  # fmt: skip
        ours, theirs = rep[shown[0]], base.get(shown[0])
        if ours is None or theirs is None:
            return f"{table}\nbaseline ({base['model']}): {shown[1]} undefined on this split"
        verdict = "above" if ours > theirs else "not above"
        return (f"{table}\nbaseline ({base['model']}, C={base['C']:g}): {shown[1]} "
                f"{theirs:.3f}; the model's {ours:.3f} is {verdict} it")  # fmt: skip
    return table


def _format_single(rep: dict) -> str:
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


def _fmt(v: float | None, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}.3f}"


def _format_multi(rep: dict) -> str:
    lines = [f"{'label':<24} {'AP':>6} {'ROC-AUC':>7} {'f1':>6} {'prec':>6} {'recall':>6} "
             f"{'support':>7} {'thresh':>6}"]  # fmt: skip
    for name, m in rep["per_label"].items():
        lines.append(
            f"{name[:24]:<24} {_fmt(m['average_precision'], 6)} {_fmt(m['roc_auc'], 7)} "
            f"{_fmt(m['f1'], 6)} {_fmt(m['precision'], 6)} {_fmt(m['recall'], 6)} "
            f"{m['support']:7d} {m['threshold']:6.3f}"
        )
    lines.append(
        f"mAP {_fmt(rep['mean_average_precision'], 0)}  macro ROC-AUC "
        f"{_fmt(rep['macro_roc_auc'], 0)}  micro ROC-AUC {_fmt(rep['micro_roc_auc'], 0)}  "
        f"sample F1 {_fmt(rep['sample_f1'], 0)}  ({rep['n_tracks']} tracks; '-': undefined, "
        f"no positives; thresholds from {rep['thresholds_from']})"
    )
    return "\n".join(lines)


@dataclass
class Evaluated:
    """The report `run` wrote to ``out``."""

    report: dict
    out: Path

    def summary(self) -> str:
        files = ("labels.png, per_label.csv" if self.report.get("task") == "multi"
                 else "confusion.csv, confusion.png, per_genre.csv")  # fmt: skip
        return (f"{format_table(self.report)}\nreport written to {self.out}/ (report.json, "
                f"{files}, predictions.csv)")  # fmt: skip


def run(opts: EvalOptions) -> Evaluated:
    """`mrnet evaluate`: score the split and write REPORT/."""
    return Evaluated(evaluate(opts), opts.out)


def evaluate(opts: EvalOptions) -> dict:
    """Run the evaluation and write REPORT/; returns the report dict."""
    check_choices(opts)
    opts.check()
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
    multi = ckpt.task == "multi"
    index = split_index(cache, opts.split)
    check_checksums(cache.root, index.shards, opts.progress)  # figures only from sound bytes
    window = window_frames(opts.window, cache.feature_config)
    probs = score_split(model, index, multi, device, opts.batch_size, window,
                        f"evaluate {opts.split}", opts.progress)  # fmt: skip
    thresholds = source = None
    if multi:
        thresholds, source = _thresholds(model, cache, opts, device, window)
    rep = report(index, probs, list(cache.labels), thresholds, source)
    rep["source"] = {
        "checkpoint": str(opts.checkpoint),
        "cache": str(opts.cache),
        "split": opts.split,
        "epoch": ckpt.epoch,
        "arch": ckpt.arch,
        "feature_config": cache.feature_config,
        "model_config": ckpt.model_config.to_dict(),
        "train_config": ckpt.train_config,
    }
    from mrnet.baseline import beside

    rep["baseline"] = beside(cache, opts.split, opts.progress)
    write_report(opts.out, opts.split, rep, cache, index, probs)
    return rep


def report(index: SplitIndex, probs: np.ndarray, labels: list[str],
           thresholds: list[float] | None = None, source: str | None = None) -> dict:  # fmt: skip
    """The report of probabilities ``probs`` [n, n_labels] for the tracks of ``index``;
    multi-label reports need per-label ``thresholds`` and say their ``source``."""
    if index.label.ndim == 2:
        rep = multilabel_report(index.label, probs, thresholds, labels)
        rep["thresholds_from"] = source
        return rep
    return single_label_report(index.label, probs, labels)


def write_report(out: Path, split: str, rep: dict, cache: Cache, index: SplitIndex,
                 probs: np.ndarray) -> None:  # fmt: skip
    """REPORT/ for ``rep`` (see the module docstring), report.json renamed into place last:
    a disk fault keeps the previous report whole, never a report.json beside another
    run's predictions."""
    multi = index.label.ndim == 2
    files = (_multi_files if multi else _single_files)(out, split, rep, cache, index, probs)
    files.append((out / "report.json", json.dumps(rep, indent=2, allow_nan=False) + "\n"))
    with writing(out, rerun=AGAIN):
        out.mkdir(parents=True, exist_ok=True)
    write_together(files, rerun=AGAIN)


def _thresholds(model, cache: Cache, opts: EvalOptions, device,
                window: int) -> tuple[list[float], str]:  # fmt: skip
    """Per-label thresholds chosen on the validation split (0.5 when it is empty)."""
    val = split_index(cache, "validation")
    if len(val) == 0:
        return [0.5] * len(cache.labels), "none (no validation split): 0.5"
    check_checksums(cache.root, val.shards, opts.progress)
    probs = score_split(model, val, True, device, opts.batch_size, window,
                        "thresholds (validation)", opts.progress)  # fmt: skip
    prior = split_index(cache, "training").label.mean(axis=0)
    return choose_thresholds(val.label, probs, prior), "the validation split (maximum F1)"


def _with_extra(pred: pd.DataFrame, cache: Cache) -> pd.DataFrame:
    shown = [c for c in EXTRA_COLUMNS if c in cache.tracks.columns]  # copied at preprocess
    if not shown:
        return pred
    return pred.join(cache.tracks.set_index("track_id")[shown], on="track_id")


def _single_files(out: Path, split: str, rep: dict, cache: Cache, index: SplitIndex,
                  probs: np.ndarray) -> list[tuple[Path, str | bytes]]:  # fmt: skip
    """confusion.csv, per_genre.csv, predictions.csv, confusion.png: (path, contents)."""
    genres = list(cache.labels)
    cm = np.array(rep["confusion"]["matrix"])
    confusion = pd.DataFrame(cm, index=pd.Index(genres, name="true"), columns=genres)
    per_genre = pd.DataFrame.from_dict(rep["per_genre"], orient="index").rename_axis("genre")
    pred = pd.DataFrame({
        "track_id": index.track_id,
        "true": [genres[i] for i in index.label],
        "predicted": [genres[i] for i in probs.argmax(1)],
        "confidence": probs.max(1),
    })  # fmt: skip
    for i, g in enumerate(genres):
        pred[f"p_{g}"] = probs[:, i]
    csv = _with_extra(pred, cache).to_csv(index=False, float_format="%.6f")
    title = f"{split}: accuracy {rep['accuracy']:.3f}, {len(index)} tracks"
    return [(out / "confusion.csv", confusion.to_csv()),
            (out / "per_genre.csv", per_genre.to_csv()), (out / "predictions.csv", csv),
            (out / "confusion.png", plot_confusion(cm, genres, title))]  # fmt: skip


def _multi_files(out: Path, split: str, rep: dict, cache: Cache, index: SplitIndex,
                 probs: np.ndarray) -> list[tuple[Path, str | bytes]]:  # fmt: skip
    """per_label.csv, predictions.csv, labels.png: (path, contents)."""
    labels = list(cache.labels)
    per_label = pd.DataFrame.from_dict(rep["per_label"], orient="index").rename_axis("label")
    thresholds = np.array([rep["per_label"][n]["threshold"] for n in labels])
    pred = (probs >= thresholds[None, :]).astype(np.uint8)

    def names(rows: np.ndarray) -> list[str]:
        return ["|".join(labels[j] for j in np.flatnonzero(r)) for r in rows]

    table = pd.DataFrame({"track_id": index.track_id, "true": names(index.label),
                          "predicted": names(pred)})  # fmt: skip
    for j, name in enumerate(labels):
        table[f"p_{name}"] = probs[:, j]
    csv = _with_extra(table, cache).to_csv(index=False, float_format="%.9g")
    mean_ap = rep["mean_average_precision"]
    shown = "-" if mean_ap is None else f"{mean_ap:.3f}"
    title = f"{split}: mAP {shown}, {len(index)} tracks"
    png = plot_multilabel(rep, index.label, pred, labels, title)
    return [(out / "per_label.csv", per_label.to_csv()), (out / "predictions.csv", csv),
            (out / "labels.png", png)]
