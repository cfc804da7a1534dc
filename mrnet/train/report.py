"""What a run says and records: metrics.csv, the lines it prints, its summary."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from mrnet.checkpoint import best_epoch
from mrnet.linear import DESCRIPTION
from mrnet.options import TrainConfig
from mrnet.task import Task
from pipeline.atomic import RERUN, write_atomic

SCORING_COLUMN = "val_scoring"  # how validation scored a track (fixed crops, whole tracks)
TIMING_COLUMNS = ("seconds", "samples_per_s")  # differ between otherwise identical runs
FEW_STEPS = 500  # fewer optimiser steps in a whole run than this: warned


def write_metrics(path: Path, history: list[dict], task: Task, rerun: str = RERUN) -> None:
    """Write metrics.csv (atomically) from the history, one row per epoch.

    Columns: the task's metric columns, how validation scored (SCORING_COLUMN), then
    TIMING_COLUMNS; other keys of a row are left out.

    Args:
        path: the CSV file.
        history: the metrics rows, one per epoch.
        task: decides the metric columns.
        rerun: how a write error's message ends (pipeline.atomic).
    """
    buf = io.StringIO()
    columns = [*task.metric_columns, SCORING_COLUMN, *TIMING_COLUMNS]
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    write_atomic(path, buf.getvalue(), rerun)


def validation_scoring(cfg: TrainConfig) -> str:
    """How validation scores a track, in words (metrics.csv's val_scoring column)."""
    if cfg.val_crops:
        return f"mean of {cfg.val_crops} crops of {cfg.crop_seconds:g} s"
    return f"whole tracks ({cfg.window:g}-s windows)" if cfg.window else "whole tracks"


def epoch_line(row: dict, epochs: int) -> str:
    """The line printed after an epoch: losses, the task's figures, lr, speed, seconds."""
    if "val_map" in row:
        figures = (
            f"train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f} "
            f"mAP {row['val_map']:.3f} ROC-AUC {row['val_macro_auc']:.3f}"
        )
    else:
        figures = (
            f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}"
        )
    rate = row["samples_per_s"]
    shown = f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"  # never "0 samples/s"
    return (
        f"epoch {row['epoch']}/{epochs}  {figures}  lr {row['lr']:.2e}  "
        f"{shown} samples/s  {row['seconds']:.1f} s"
    )


def start_line(t) -> str:
    """What is about to happen (Trainer ``t``), printed before the first epoch (also
    without a bar), and a warning when the whole run makes few optimiser steps."""
    cfg, steps = t.cfg, len(t.source)
    procs = f" x {t.torchrun.world} processes" if t.torchrun.world > 1 else ""
    passes = t.source.plan.passes
    visits = f" ({passes} crops of each track)" if passes > 1 else ""
    line = (
        f"training {cfg.arch} on {len(t.train_idx)} tracks of {cfg.cache}: {steps} steps "
        f"of {cfg.batch_size} crops{procs} per epoch{visits}, epochs {t.epoch + 1}-"
        f"{cfg.epochs}, validating on {len(t.val_idx)} tracks "
        f"({validation_scoring(cfg)}), on {t.device.type}"
    )
    total = steps * cfg.epochs
    if total < FEW_STEPS:
        line += (
            f"\nwarning: this run makes only {total} optimiser steps in all ({cfg.epochs} "
            f"epochs of {steps}); MRNet needs hundreds to thousands: raise --epochs or "
            "--min-steps"
        )
    return line


@dataclass
class Trained:
    """What `mrnet train` reports: run dir, epochs done, the best validation figure
    (``select_by``: val_acc or val_map) and its epoch (the one best.pt holds), and the
    built-in baseline's; ``main`` is False on the other torchrun processes."""

    main: bool
    run: str
    epochs: int
    select_by: str
    best: float
    best_epoch: int | None
    last: dict | None
    baseline: float | None = None

    def summary(self) -> str:
        """The run's outcome, and how it compares with the baseline; "" off rank 0."""
        if not self.main:
            return ""
        figure = {"val_acc": "accuracy", "val_map": "mAP"}[self.select_by]
        text = (
            f"{self.epochs} epochs in {self.run}; best validation {figure} {self.best:.3f} "
            f"(epoch {self.best_epoch}): {self.run}/best.pt, last.pt, metrics.csv"
        )
        if self.baseline is None or not math.isfinite(self.baseline):
            return text
        if self.best < self.baseline:
            return text + (
                f"\nbelow the baseline: its validation {figure} is {self.baseline:.3f} "
                f"({DESCRIPTION}; `mrnet baseline` writes its report): train longer, or "
                "see README's Train section for settings measured on real music"
            )
        return text + f" (the baseline's: {self.baseline:.3f})"


@dataclass
class Printed:
    """`--print-config`: the settings a run would use, as a recipe."""

    text: str

    def summary(self) -> str:
        """The recipe text."""
        return self.text.rstrip("\n")


def summary(
    out: Path, history: list[dict], select_by: str, main: bool, baseline: float | None = None
) -> Trained:
    """The run's outcome from its history (see `Trained`).

    Args:
        out: the run folder.
        history: the metrics rows, one per epoch, from epoch 1.
        select_by: the figure that picks best.pt.
        main: whether this is the main (rank 0) process.
        baseline: the built-in baseline's validation figure, if any.

    Returns:
        A Trained; best.pt's epoch is `best_epoch`'s (the last one when no epoch has a
        finite ``select_by``), ``best`` NaN for an empty history.
    """
    b = best_epoch(history, select_by)
    best_row = history[b - 1] if b else None
    return Trained(
        main=main,
        run=str(out),
        epochs=len(history),
        select_by=select_by,
        best=best_row[select_by] if best_row else math.nan,
        best_epoch=b,
        last=history[-1] if history else None,
        baseline=baseline,
    )
