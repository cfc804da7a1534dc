"""One epoch of training steps, and validation.

A training step: crops to the device, additive noise and optional SpecAugment, optional
mixup, a forward pass (bf16 autocast on CUDA, fp32 on CPU), the task's loss, AdamW,
gradient clipping. The first non-finite loss stops every process (BadInput naming the
batch's tracks) before anything is saved. Validation scores each validation track (its
mean window or crop probability) with rank 0's BatchNorm statistics, on every process's
share of the tracks, and every process computes the whole split's figures.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from mrnet.augment import mixup
from mrnet.runtime import Torchrun, autocast, collective_device
from mrnet.scoring import score
from mrnet.task import Task
from pipeline.cache.reader import SplitIndex
from pipeline.errors import BadInput

_NO_BAD = 2**62  # "no non-finite loss yet" in the device-side step counter


def train_epoch(t, epoch: int) -> tuple[float, float, int]:
    """One pass over the epoch's crops of Trainer ``t``. Returns (mean loss, accuracy,
    samples) over all ranks (accuracy NaN when the task has none); BadInput at the first
    non-finite loss (checked every step on CPU, every 16 steps on a GPU, where each check
    is a host sync)."""
    cfg, device, torchrun = t.cfg, t.device, t.torchrun
    t.net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    first_bad = torch.full((), _NO_BAD, dtype=torch.int64, device=device)
    plan, steps, seen, counted = t.source.plan.epoch(epoch), len(t.source), 0, False
    check_every = 1 if device.type == "cpu" else 16
    bar = tqdm(  # on rank 0, counting the samples of all processes
        total=steps * cfg.batch_size * torchrun.world,
        desc=f"epoch {epoch}/{cfg.epochs}",
        unit="sample",
        leave=False,
        disable=not (cfg.progress and torchrun.main),
    )
    for step, (x, y) in enumerate(t.source.batches(epoch)):
        x = t.augment(x.to(device, non_blocking=True))
        y = t.task.targets(y.to(device, non_blocking=True))
        if cfg.mixup > 0:
            x, partner, lam = mixup(x, y, cfg.mixup)
        with autocast(device):
            logits = t.net(x)
        loss = t.criterion(logits.float(), y)
        if cfg.mixup > 0:
            loss = lam * loss + (1 - lam) * t.criterion(logits.float(), partner)
        bad = ~torch.isfinite(loss) & (first_bad == _NO_BAD)
        first_bad = torch.where(bad, torch.full_like(first_bad, step), first_bad)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(t.net.parameters(), cfg.grad_clip)
        t.optimizer.step()
        loss_sum += loss.detach() * len(y)
        right = t.task.correct(logits, y)
        if right is not None:
            correct += right
            counted = True
        seen += len(y)
        bar.update(len(y) * torchrun.world)
        if (step + 1) % check_every == 0 or step + 1 == steps:
            _raise_if_non_finite(first_bad, plan, t.train_idx, epoch, torchrun, cfg.cache)
        if step % 10 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device).double()])
    if torchrun.enabled:
        dist.all_reduce(totals)
    loss_sum, correct, seen = totals.tolist()
    return loss_sum / seen, (correct / seen if counted else math.nan), int(seen)


def _raise_if_non_finite(
    first_bad: torch.Tensor, plan: list, index: SplitIndex, epoch: int, torchrun: Torchrun, cache
) -> None:
    """Stop every process at the first step whose loss was not finite (device counter:
    one host sync per check). The process that saw it names its batch's tracks."""
    code = torch.where(first_bad < _NO_BAD, first_bad * torchrun.world + torchrun.rank, first_bad)
    if torchrun.enabled:
        code = code.to(collective_device())
        dist.all_reduce(code, op=dist.ReduceOp.MIN)
    code = int(code)
    if code >= _NO_BAD:
        return
    step, rank = divmod(code, torchrun.world)
    if rank != torchrun.rank:
        raise BadInput(
            f"training loss became NaN or infinite at epoch {epoch} on torchrun process {rank} "
            "(see its error); last.pt and best.pt are left as they were"
        )
    ids = " ".join(str(t) for t in index.track_id[plan[step][0]].tolist())
    raise BadInput(
        f"training loss became NaN or infinite at epoch {epoch}, step {step + 1}, on a batch "
        f"of tracks {ids}; last.pt and best.pt are left as they were; check the cache with "
        f"`mrnet verify {cache}` (or lower --lr) and rerun"
    )


@torch.no_grad()
def validate(
    model: nn.Module,
    task: Task,
    index: SplitIndex,
    weight: np.ndarray,
    device: torch.device,
    window: int,
    max_frames: int,
    torchrun: Torchrun = Torchrun(),
    crops: int = 0,
    prior: np.ndarray | None = None,
) -> tuple[dict[str, float], list[float] | None]:
    """The validation figures of the tracks of ``index`` and the task's decision thresholds.

    The figures are `Task.validation`'s of each track's mean window probability
    (`mrnet.scoring`). Under torchrun each process scores its share (every world-th
    track) and the probabilities are gathered, so every process returns the whole
    split's figures. NaN figures (and no thresholds) for an empty split; BadInput when
    an output is not finite.

    Args:
        model: the plain module (not DDP-wrapped), the same on every process.
        task: the run's task.
        index: the validation split.
        weight: float32 [L]: the training loss weights (`Task.loss_weights`).
        device: where the model runs.
        window: window (or crop) length in frames; 0: whole tracks.
        max_frames: frames per forward pass.
        torchrun: this process's place among the torchrun processes.
        crops: when > 0, that many fixed crops of ``window`` frames per track instead of
            windows over the whole track.
        prior: float [L]: the labels' training frequencies (multi-label thresholds).

    Returns:
        (the val_* figures of a metrics.csv row, per-label thresholds or None).
    """
    n_labels = len(weight)
    if len(index) == 0:
        return {
            k: math.nan for k in task.metric_columns if k.startswith("val_") and k != "val_tracks"
        }, None
    positions = np.arange(torchrun.rank, len(index), torchrun.world)
    share = index.subset(positions)
    probs_share = (
        score(model, share, task, device, window, max_frames, crops=crops)
        if len(share)
        else np.zeros((0, n_labels))
    )
    parts = [(positions, probs_share)]
    if torchrun.enabled:
        parts = [None] * torchrun.world
        dist.all_gather_object(parts, (positions, probs_share))
    probs = np.zeros((len(index), n_labels), np.float64)
    for rows, out in parts:
        probs[rows] = out
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        shown = " ".join(map(str, index.track_id[bad][:10].tolist()))
        raise BadInput(
            f"validation outputs are NaN or infinite for {int(bad.sum())} tracks (e.g. "
            f"{shown}); last.pt and best.pt are left as they were; check the cache with "
            "`mrnet verify` and rerun"
        )
    return task.validation(index.label, probs, weight, prior)
