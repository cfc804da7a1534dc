"""REPORT/ of `mrnet evaluate` and `mrnet baseline`: the files a task writes for a
report dict, and the table printed for it. Every file is written whole under a temporary
name before any is replaced, report.json renamed into place last: a disk fault on a rerun
keeps the previous report whole, never a report.json beside another run's predictions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mrnet.task import TASKS
from pipeline.atomic import AGAIN, write_together, writing
from pipeline.cache.layout import EXTRA_COLUMNS
from pipeline.cache.reader import Cache, SplitIndex


@dataclass
class Evaluated:
    """The report `run` wrote to ``out``."""

    report: dict
    out: Path

    def summary(self) -> str:
        """The report's table (`format_table`) and where its files were written."""
        files = TASKS[self.report["task"]].report_files
        return (
            f"{format_table(self.report)}\nreport written to {self.out}/ (report.json, "
            f"{files}, predictions.csv)"
        )


def format_table(rep: dict) -> str:
    """The report as a table for the terminal, the baseline's figure below it."""
    task = TASKS[rep["task"]]
    table, base = task.table(rep), rep.get("baseline")
    if not base:
        return table
    if "note" in base:
        return f"{table}\nbaseline: none ({base['note']})"
    figure, ours = task.headline(rep)
    theirs = base.get(task.report_figures[0])
    if ours is None or theirs is None:
        return f"{table}\nbaseline ({base['model']}): {figure} undefined on this split"
    verdict = "above" if ours > theirs else "not above"
    return (
        f"{table}\nbaseline ({base['model']}, C={base['C']:g}): {figure} {theirs:.3f}; "
        f"the model's {ours:.3f} is {verdict} it"
    )


def write_report(
    out: Path, split: str, rep: dict, cache: Cache, index: SplitIndex, probs: np.ndarray
) -> None:
    """Write REPORT/ for ``rep``: the task's files, then report.json, renamed into place last.

    A disk fault keeps the previous report whole, never a report.json beside another
    run's predictions.

    Args:
        out: the report folder (created if missing).
        split: the split reported on.
        rep: the report dict (JSON-serialisable; no NaN).
        cache: the cache, for the extra per-track columns preprocess stored.
        index: the split's tracks, in the order of ``probs``.
        probs: float32 [n, n_labels] per-track probabilities.
    """

    def with_extra(pred: pd.DataFrame) -> pd.DataFrame:
        """``pred`` joined (on track_id) with the cache's extra per-track columns, if any."""
        shown = [c for c in EXTRA_COLUMNS if c in cache.tracks.columns]  # from preprocess
        if not shown:
            return pred
        return pred.join(cache.tracks.set_index("track_id")[shown], on="track_id")

    files = TASKS[rep["task"]].files(out, split, rep, index, probs, with_extra)
    files.append((out / "report.json", json.dumps(rep, indent=2, allow_nan=False) + "\n"))
    with writing(out, rerun=AGAIN):
        out.mkdir(parents=True, exist_ok=True)
    write_together(files, rerun=AGAIN)
