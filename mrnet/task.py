"""What a model is asked: one label per track (`SingleLabel`) or a set of labels
(`MultiLabel`). Everything that differs between the two lives here, behind one small
interface; `TASKS` maps the name a cache's manifest and a checkpoint record to it.

Labels y: single-label int64 [n] label indices; multi-label uint8 [n, L] 0/1.
Probabilities p: float [n, L]: softmax (single) or a sigmoid per label (multi).
A multi-label decision needs a threshold per label (chosen on validation, maximum F1).

Importing this loads no torch: `mrnet compare` and `mrnet info` read reports without a
model; the methods that need torch import it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mrnet import metrics

POS_WEIGHT_CAP = 10.0  # multi-label: negatives / positives of a label, at most this


class Task:
    """The interface (both tasks implement every method)."""

    name: str  # as recorded: "single" | "multi"
    select_by: str  # the validation figure that picks best.pt
    figure: str  # that figure, in words
    metric_columns: tuple[str, ...]  # metrics.csv, before the timing columns
    report_figures: tuple[str, ...]  # report.json's headline figures (compare)
    run_figures: tuple[str, ...]  # a run's validation figures (compare)
    report_files: str  # what REPORT/ holds beside report.json and predictions.csv
    thresholded: bool  # decisions need per-label thresholds (chosen on validation)
    needs_every_label: bool  # a label without training tracks is refused (else noted)

    def label_counts(self, labels: np.ndarray, n_labels: int) -> np.ndarray:
        """Int [L]: the tracks of ``labels`` that carry each label."""
        ...

    def loss_weights(self, labels: np.ndarray, n_labels: int) -> np.ndarray:
        """Float32 [L]: the loss's per-label weights, from the training tracks' ``labels``."""
        ...

    def criterion(self, weight):
        """The training loss for logits and targets, given `loss_weights` (a tensor)."""
        ...

    def targets(self, y):
        """The loss's targets for a batch's labels ``y`` (here ``y`` itself)."""
        return y

    def correct(self, logits, y):
        """How many predictions of a batch are right (None: not defined)."""
        return None

    def probabilities(self, logits) -> np.ndarray:
        """Float64 [b, L] probabilities of a batch's logits; rows with a non-finite logit NaN."""
        ...

    def validation(
        self, y: np.ndarray, probs: np.ndarray, weight: np.ndarray, prior: np.ndarray
    ) -> tuple[dict[str, float], list[float] | None]:
        """The validation figures of a metrics.csv row, and the decision thresholds.

        Args:
            y: the validation tracks' labels (single int64 [n]; multi uint8 [n, L]).
            probs: float [n, L]: each track's mean probability over its windows.
            weight: float32 [L]: `loss_weights` of the training tracks.
            prior: float [L]: each label's frequency among the training tracks.

        Returns:
            (figures: val_loss and the task's validation figures, per-label thresholds or
            None when the task needs none).
        """
        ...

    def report(
        self,
        y: np.ndarray,
        probs: np.ndarray,
        names: list[str],
        thresholds: list[float] | None = None,
        source: str | None = None,
    ) -> dict:
        """The report dict of a split: every figure of mrnet.metrics for the task.

        Args:
            y: the tracks' labels (single int64 [n]; multi uint8 [n, L]).
            probs: float [n, L]: the tracks' probabilities.
            names: the L label names.
            thresholds: per-label decision thresholds (multi-label; required there).
            source: where the thresholds come from, in words (multi-label).

        Returns:
            The report dict ("task" names the task).
        """
        ...

    def files(
        self, out: Path, split: str, rep: dict, index, probs: np.ndarray, predictions
    ) -> list[tuple[Path, str | bytes]]:
        """The files of REPORT/ other than report.json, as (path, content), not yet written.

        Args:
            out: the report folder.
            split: the split reported on (in the figure's title).
            rep: the report dict (`report`).
            index: the split's tracks (SplitIndex), in the order of ``probs``.
            probs: float32 [n, L] per-track probabilities.
            predictions: adds columns to the predictions table (DataFrame -> DataFrame).

        Returns:
            (path, text or PNG bytes) per file, predictions.csv among them.
        """
        ...

    def table(self, rep: dict) -> str:
        """The report as a table for the terminal."""
        ...

    def headline(self, rep: dict) -> tuple[str, float | None]:
        """(the report's main figure in words, its value)."""
        ...

    def per_label_f1(self, rep: dict) -> tuple[list[str], dict[str, float | None]]:
        """(the label names, each label's F1 in the report; None where undefined)."""
        ...

    def chosen(
        self, probs: np.ndarray, names: list[str], thresholds: list[float] | None
    ) -> list[str] | None:
        """The labels a prediction names (multi-label: those above their thresholds)."""
        return None

    def csv_header(self, names: list[str], top: int) -> list[str]:
        """`mrnet predict --csv`: the columns between path and error."""
        ...

    def csv_cells(self, p, names: list[str], top: int) -> list[str]:
        """`mrnet predict --csv`: a readable file's cells between path and error."""
        ...

    def json_fields(self, p, names: list[str], top: int) -> dict:
        """`mrnet predict --json`: a file's fields between path and error."""
        ...

    def line(self, p, top: int) -> str:
        """`mrnet predict`: what follows "path: " for a readable file."""
        ...

    def classifier(self, c: float):
        """The baseline's classifier at regularisation ``c`` (scikit-learn)."""
        ...

    def score(self, y: np.ndarray, probs: np.ndarray) -> float:
        """The baseline's selection figure."""
        ...


def _probabilities(logits, per_label: bool) -> np.ndarray:
    """Float64 [b, L]: a sigmoid per label (``per_label``) or a softmax; rows with a
    non-finite logit are NaN (an overflow, never a probability)."""
    import torch

    z = logits.detach().double().cpu()
    p = torch.sigmoid(z) if per_label else torch.softmax(z, dim=-1)
    p[~torch.isfinite(z).all(dim=1)] = float("nan")
    return p.numpy()


def _fmt(v: float | None, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}.3f}"


class SingleLabel(Task):
    """One label per track: softmax, cross entropy, accuracy."""

    name = "single"
    select_by = "val_acc"
    figure = "accuracy"
    metric_columns = (
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "train_samples",
        "val_tracks",
    )
    report_figures = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "top2_accuracy")
    run_figures = ("val_acc", "val_loss")
    report_files = "confusion.csv, confusion.png, per_genre.csv"
    thresholded = False
    needs_every_label = True  # a class without training tracks is never predicted

    def label_counts(self, labels: np.ndarray, n_labels: int) -> np.ndarray:
        """Int [L]: tracks per class (a bincount of the label indices)."""
        return np.bincount(labels, minlength=n_labels)

    def loss_weights(self, labels: np.ndarray, n_labels: int) -> np.ndarray:
        """Float32 [L]: max count / count over the training tracks; 0 for an absent label."""
        counts = self.label_counts(labels, n_labels).astype(np.float64)
        return np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0).astype(np.float32)

    def criterion(self, weight):
        """Class-weighted cross entropy (``weight``: float [L])."""
        from torch import nn

        return nn.CrossEntropyLoss(weight=weight)

    def correct(self, logits, y):
        """How many tracks of the batch have their label as the highest logit (a tensor)."""
        return (logits.argmax(1) == y).sum()

    def probabilities(self, logits) -> np.ndarray:
        """Float64 [b, L]: the softmax of the logits; rows with a non-finite logit NaN."""
        return _probabilities(logits, per_label=False)

    def validation(self, y, probs, weight, prior):
        """Class-weighted cross entropy and accuracy; no thresholds (None).

        The loss is that of each track's probability of its label (the mean over its
        windows); NaN when the weights sum to 0.

        Args: as `Task.validation`.
        """
        w = weight[y].astype(np.float64)
        p_true = np.maximum(probs[np.arange(len(y)), y], np.finfo(np.float64).tiny)
        loss = float((w * -np.log(p_true)).sum() / w.sum()) if w.sum() else math.nan
        return {"val_loss": loss, "val_acc": float((probs.argmax(1) == y).mean())}, None

    def report(self, y, probs, names, thresholds=None, source=None) -> dict:
        """`metrics.single_label_report`; ``thresholds`` and ``source`` are ignored.

        Args: as `Task.report`.
        """
        return metrics.single_label_report(y, probs, names)

    def files(self, out, split, rep, index, probs, predictions):
        """confusion.csv, per_genre.csv, predictions.csv (argmax) and confusion.png.

        Args: as `Task.files`.
        """
        import pandas as pd

        from mrnet.plots import plot_confusion

        names = rep["confusion"]["labels"]
        cm = np.array(rep["confusion"]["matrix"])
        confusion = pd.DataFrame(cm, index=pd.Index(names, name="true"), columns=names)
        per = pd.DataFrame.from_dict(rep["per_genre"], orient="index").rename_axis("genre")
        table = pd.DataFrame(
            {
                "track_id": index.track_id,
                "true": [names[i] for i in index.label],
                "predicted": [names[i] for i in probs.argmax(1)],
                "confidence": probs.max(1),
            }
        )
        for i, g in enumerate(names):
            table[f"p_{g}"] = probs[:, i]
        csv = predictions(table).to_csv(index=False, float_format="%.6f")
        title = f"{split}: accuracy {rep['accuracy']:.3f}, {len(index)} tracks"
        return [
            (out / "confusion.csv", confusion.to_csv()),
            (out / "per_genre.csv", per.to_csv()),
            (out / "predictions.csv", csv),
            (out / "confusion.png", plot_confusion(cm, names, title)),
        ]

    def table(self, rep: dict) -> str:
        """Per-genre precision, recall, F1 and support, the summary figures, most confused."""
        lines = [f"{'label':<20} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
        for g, m in rep["per_genre"].items():
            lines.append(
                f"{g:<20} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f} {m['support']:8d}"
            )
        lines.append(
            f"accuracy {rep['accuracy']:.3f}  balanced {rep['balanced_accuracy']:.3f}  "
            f"macro F1 {rep['macro_f1']:.3f}  weighted F1 {rep['weighted_f1']:.3f}  "
            f"top-2 {rep['top2_accuracy']:.3f}  ({rep['n_tracks']} tracks)"
        )
        pairs = metrics.most_confused(
            np.array(rep["confusion"]["matrix"]), rep["confusion"]["labels"]
        )
        if pairs:
            lines.append("most confused: " + "; ".join(f"{a} -> {b} ({n})" for a, b, n in pairs))
        return "\n".join(lines)

    def headline(self, rep: dict) -> tuple[str, float | None]:
        """("accuracy", the report's accuracy)."""
        return "accuracy", rep.get("accuracy")

    def per_label_f1(self, rep: dict) -> tuple[list[str], dict[str, float | None]]:
        """The per_genre F1s, in the confusion matrix's label order."""
        names = list(rep["confusion"]["labels"])
        return names, {n: rep["per_genre"][n].get("f1") for n in names}

    def csv_header(self, names, top):
        """genre_1, p_1, ..., genre_top, p_top."""
        return [f"{c}_{i}" for i in range(1, top + 1) for c in ("genre", "p")]

    def csv_cells(self, p, names, top):
        """The ``top`` most probable genres and probabilities, padded with empty cells."""
        cells = [x for g, v in p.top(top) for x in (g, f"{v:.4f}")]
        return cells + [""] * (2 * top - len(cells))

    def json_fields(self, p, names, top):
        """{"top": the ``top`` most probable (genre, probability) pairs}."""
        return {"top": p.top(top)}

    def line(self, p, top):
        """The ``top`` most probable genres with their probabilities."""
        return ", ".join(f"{g} {v:.2f}" for g, v in p.top(top))

    def classifier(self, c: float):
        """A (multinomial) LogisticRegression at ``C=c``."""
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=c, max_iter=2000)

    def score(self, y: np.ndarray, probs: np.ndarray) -> float:
        """Accuracy of the argmax."""
        return float((probs.argmax(1) == y).mean())


class MultiLabel(Task):
    """A set of labels per track: a sigmoid per label, binary cross entropy, mAP."""

    name = "multi"
    select_by = "val_map"
    figure = "mAP"
    metric_columns = (
        "epoch",
        "train_loss",
        "val_loss",
        "val_map",
        "val_macro_auc",
        "lr",
        "train_samples",
        "val_tracks",
    )
    report_figures = ("mean_average_precision", "macro_roc_auc", "micro_roc_auc", "sample_f1")
    run_figures = ("val_map", "val_macro_auc", "val_loss")
    report_files = "labels.png, per_label.csv"
    thresholded = True
    needs_every_label = False

    def label_counts(self, labels: np.ndarray, n_labels: int) -> np.ndarray:
        """Int64 [L]: positives per label (column sums of the 0/1 matrix)."""
        return labels.sum(axis=0, dtype=np.int64)

    def loss_weights(self, labels: np.ndarray, n_labels: int) -> np.ndarray:
        """Float32 [L]: negatives / positives of each label over the training tracks, at
        most POS_WEIGHT_CAP (also for a label without a positive)."""
        pos = self.label_counts(labels, n_labels).astype(np.float64)
        w = np.where(pos > 0, (len(labels) - pos) / np.maximum(pos, 1), POS_WEIGHT_CAP)
        return np.clip(w, 1e-3, POS_WEIGHT_CAP).astype(np.float32)

    def criterion(self, weight):
        """Binary cross entropy per label, positives weighted by ``weight`` (float [L])."""
        from torch import nn

        return nn.BCEWithLogitsLoss(pos_weight=weight)

    def targets(self, y):
        """The 0/1 labels as float (what BCEWithLogitsLoss takes)."""
        return y.float()

    def probabilities(self, logits) -> np.ndarray:
        """Float64 [b, L]: a sigmoid per label; rows with a non-finite logit NaN."""
        return _probabilities(logits, per_label=True)

    def validation(self, y, probs, weight, prior):
        """Positive-weighted binary cross entropy, mAP and macro ROC-AUC; F1 thresholds.

        The loss is that of the mean window probabilities; the thresholds maximise F1
        (``prior``: the labels' training frequencies, for labels without validation
        positives; see `metrics.choose_thresholds`).

        Args: as `Task.validation`.
        """
        t = y.astype(np.float64)
        tiny = np.finfo(np.float64).tiny
        loss = -(
            weight[None, :] * t * np.log(np.maximum(probs, tiny))
            + (1 - t) * np.log(np.maximum(1 - probs, tiny))
        ).mean()
        figures = {"val_loss": float(loss), **metrics.validation_figures(y, probs)}
        return figures, metrics.choose_thresholds(y, probs, prior)

    def report(self, y, probs, names, thresholds=None, source=None) -> dict:
        """`metrics.multilabel_report`, with ``source`` as "thresholds_from".

        Args: as `Task.report`.
        """
        rep = metrics.multilabel_report(y, probs, thresholds, names)
        rep["thresholds_from"] = source
        return rep

    def files(self, out, split, rep, index, probs, predictions):
        """per_label.csv, predictions.csv (labels at or above the thresholds) and labels.png.

        Args: as `Task.files`.
        """
        import pandas as pd

        from mrnet.plots import plot_multilabel

        names = list(rep["per_label"])
        per = pd.DataFrame.from_dict(rep["per_label"], orient="index").rename_axis("label")
        thresholds = np.array([rep["per_label"][n]["threshold"] for n in names])
        pred = (probs >= thresholds[None, :]).astype(np.uint8)

        def joined(rows: np.ndarray) -> list[str]:
            """Per row of a 0/1 matrix, its labels' names joined by "|"."""
            return ["|".join(names[j] for j in np.flatnonzero(r)) for r in rows]

        table = pd.DataFrame(
            {"track_id": index.track_id, "true": joined(index.label), "predicted": joined(pred)}
        )
        for j, name in enumerate(names):
            table[f"p_{name}"] = probs[:, j]
        csv = predictions(table).to_csv(index=False, float_format="%.9g")
        shown = (
            "-"
            if rep["mean_average_precision"] is None
            else (f"{rep['mean_average_precision']:.3f}")
        )
        png = plot_multilabel(
            rep, index.label, pred, names, f"{split}: mAP {shown}, {len(index)} tracks"
        )
        return [
            (out / "per_label.csv", per.to_csv()),
            (out / "predictions.csv", csv),
            (out / "labels.png", png),
        ]

    def table(self, rep: dict) -> str:
        """Per-label AP, ROC-AUC, F1, precision, recall, support, threshold; the averages."""
        lines = [
            f"{'label':<24} {'AP':>6} {'ROC-AUC':>7} {'f1':>6} {'prec':>6} {'recall':>6} "
            f"{'support':>7} {'thresh':>6}"
        ]
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

    def headline(self, rep: dict) -> tuple[str, float | None]:
        """("mAP", the report's mean average precision)."""
        return "mAP", rep.get("mean_average_precision")

    def per_label_f1(self, rep: dict) -> tuple[list[str], dict[str, float | None]]:
        """The per_label F1s, in the report's label order."""
        names = list(rep["per_label"])
        return names, {n: rep["per_label"][n].get("f1") for n in names}

    def chosen(self, probs, names, thresholds):
        """The labels at or above their thresholds (0.5 without), most probable first."""
        t = thresholds or [0.5] * len(names)
        order = np.argsort(probs)[::-1]
        return [names[i] for i in order if probs[i] >= t[i]]

    def csv_header(self, names, top):
        """labels, then p_<label> for every label (``top`` is not used)."""
        return ["labels", *[f"p_{n}" for n in names]]

    def csv_cells(self, p, names, top):
        """The chosen labels joined by "|", then every label's probability."""
        return ["|".join(p.labels or []), *[f"{p.probs[n]:.4f}" for n in names]]

    def json_fields(self, p, names, top):
        """{"labels": the chosen (label, probability) pairs, "probabilities": all}."""
        return {"labels": p.chosen(len(names)), "probabilities": p.probs}

    def line(self, p, top):
        """Up to ``top`` chosen labels with probabilities, or the most probable if none."""
        if p.labels:
            return ", ".join(f"{n} {v:.2f}" for n, v in p.chosen(top))
        name, value = p.top(1)[0]
        return f"no label reaches its threshold (highest: {name} {value:.2f})"

    def classifier(self, c: float):
        """One-vs-rest LogisticRegressions at ``C=c``, one per label."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        return OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000))

    def score(self, y: np.ndarray, probs: np.ndarray) -> float:
        """mAP over the labels with positives (NaN when none has)."""
        return float(metrics.validation_figures(y, probs)["val_map"])


TASKS: dict[str, Task] = {t.name: t for t in (SingleLabel(), MultiLabel())}
