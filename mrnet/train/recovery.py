"""What a crash cannot break. RUN/last.pt holds the whole run (states, history, and the
weights of the best epoch); RUN/best.pt and metrics.csv are views of it. Each epoch
writes best.pt (when improved), then last.pt, then metrics.csv, each atomically: a kill
between two writes leaves a view one epoch behind or ahead, and `--resume` rewrites both
from last.pt first (`heal_best`). best.pt is always the first epoch with the best
validation figure in metrics.csv."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from mrnet import checkpoint
from mrnet.checkpoint import Checkpoint, best_epoch
from mrnet.plots import plot_curves
from mrnet.train.report import write_metrics
from mrnet.train.trainer import Trainer, state_copy
from pipeline.atomic import RERUN
from pipeline.errors import BadInput


def save_epoch(t: Trainer, improved: bool) -> None:
    """best.pt (when improved), then last.pt, then metrics.csv and curves.png."""
    out = t.cfg.out
    rerun = "rerun with --resume" if (out / "last.pt").exists() else RERUN
    last = t.checkpoint()
    if improved:
        checkpoint.save(last.as_best(), out / "best.pt", rerun)
    checkpoint.save(last, out / "last.pt", rerun)
    write_metrics(out / "metrics.csv", t.history, t.task, rerun)
    plot_curves(t.history, t.task.select_by, out / "curves.png", rerun)


def _read_best(path: Path) -> Checkpoint | None:
    try:
        return checkpoint.load(path)
    except BadInput:
        return None  # missing, truncated or foreign: rewritten below


def _holds_best(best: Checkpoint | None, last: Checkpoint, b: int) -> bool:
    """``best`` is the checkpoint of epoch ``b`` of the run in ``last``."""
    if best is None or best.epoch != b or best.history != last.history[:b]:
        return False
    if best.run_id and last.run_id and best.run_id != last.run_id:
        return False
    weights = last.model if b == last.epoch else last.best_model
    if weights is not None:
        return set(weights) == set(best.model) and all(
            torch.equal(weights[k], best.model[k]) for k in weights
        )
    return True


def heal_best(t: Trainer, last: Checkpoint, run_epoch) -> None:
    """Make RUN/best.pt the checkpoint of the first epoch with the best validation figure
    in last.pt's history, and set ``t.best_model`` to its weights. The weights come from
    last.pt; for a last.pt of mrnet 0.1 (no best weights in it) the epochs up to the best
    one are replayed (``run_epoch``) from best.pt, when it is an earlier resumable epoch
    of the same run, or from the start. The caller then restores ``t`` to last.pt."""
    out = t.cfg.out / "best.pt"
    b = best_epoch(last.history, t.task.select_by)
    if b is None:
        return
    current = _read_best(out)
    if t.torchrun.enabled:
        dist.barrier()  # every process has read best.pt before rank 0 may rewrite it
    if _holds_best(current, last, b):
        t.best_model = current.model
        return
    if b == last.epoch:
        weights = last.model
    elif last.best_model is not None:
        weights = last.best_model
    else:
        start = current
        usable = (
            start is not None
            and start.resumable
            and start.epoch < b
            and start.history == last.history[: start.epoch]
        )
        weights = _replay(t, start if usable else None, b, last, run_epoch)
    t.best_model = weights
    if t.torchrun.main:
        was = f"epoch {current.epoch}" if current is not None else "no readable checkpoint"
        healed = dataclasses.replace(last, best_model=weights, best_epoch=b)
        checkpoint.save(healed.as_best(), out)
        tqdm.write(f"note: repaired {out}: it held {was}; the best epoch is {b}")


def _replay(t: Trainer, start: Checkpoint | None, target: int, last: Checkpoint, run_epoch) -> dict:
    """Train epochs up to ``target`` again from ``start`` (None: from the run's seeded
    initial state, which ``t`` holds when fresh) and return the weights at ``target``."""
    if start is not None:
        t.restore(start)
    if t.torchrun.main:
        tqdm.write(
            f"note: rebuilding best.pt: replaying epochs {t.epoch + 1}-{target} of {t.cfg.out}"
        )
    while t.epoch < target:
        row = run_epoch(t)
    want, key = last.history[target - 1], t.task.select_by
    if t.torchrun.main and not math.isclose(row[key], want[key], abs_tol=1e-9):
        tqdm.write(
            f"warning: the replayed epoch {target} scored {key} {row[key]:.4f}, the run "
            f"logged {want[key]:.4f} (GPU nondeterminism); best.pt holds the replay"
        )
    return state_copy(t.model)
