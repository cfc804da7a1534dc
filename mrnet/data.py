"""Training and validation batches (torch tensors) from a cache's memmapped shards.

    crop_plan      a rank's share of the epoch's (track, start frame) pairs: a pure function
                   of (seed, epoch, rank, world, passes); the ranks' shares are disjoint
    CropPlan       those settings for a run (`passes_for`: enough steps per epoch)
    MemmapCrops    crops read through the cache reader's FrameStore (DataLoader, batch-level)
    ResidentCrops  `--data-on-gpu`: all training frames in one device tensor, crops by gather

Every batch is ``(x, y)``: x float32 [batch, n_mels, frames], y int64 [batch] labels.
Training epochs visit random permutations of the tracks (as many as the epoch rule asks
for: see `passes_for`), one crop per visit, full batches only (BatchNorm needs more than
one example). A crop starts uniformly in
[0, length - crop]; a track shorter than the crop is wrap-padded (its frames repeat
from its start). Where tracks lie and how frames are read is the cache reader's
(pipeline.cache.reader: SplitIndex, FrameStore).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mrnet.frames import to_model_layout
from pipeline.cache.reader import FrameStore, SplitIndex

Batch = tuple[torch.Tensor, torch.Tensor]


def crop_plan(
    lengths: np.ndarray,
    frames: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    passes: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """An epoch's batches of (track indices int64 [B], start frames int64 [B]) for one rank.

    The epoch visits every track ``passes`` times: ``passes`` permutations one after the
    other, depending on (seed, epoch) only, so all ranks agree on them and take disjoint
    strided slices of their first ``len // world * world`` entries; crop starts depend on
    (seed, epoch, rank). Every rank gets the same number of batches (DDP needs equal step
    counts); incomplete batches are dropped, so an epoch skips fewer than
    ``world * batch_size`` crops.

    Args:
        lengths: int64 [n]: frames of each training track.
        frames: crop length (frames); starts are uniform in [0, max(length - frames, 0)].
        batch_size: tracks per batch.
        seed: run seed.
        epoch: epoch number.
        rank: this rank, in [0, world).
        world: number of ranks.
        passes: visits of each track per epoch (see `passes_for`).

    Returns:
        One (tracks int64 [batch_size], starts int64 [batch_size]) pair per full batch.
    """
    rng = np.random.default_rng([seed, epoch])
    order = np.concatenate([rng.permutation(len(lengths)) for _ in range(passes)])
    per_rank = len(order) // world
    mine = order[: per_rank * world][rank::world]
    rng = np.random.default_rng([seed, epoch, rank])
    starts = rng.integers(0, np.maximum(lengths[mine] - frames, 0) + 1)
    n = len(mine) // batch_size * batch_size
    return [(mine[i : i + batch_size], starts[i : i + batch_size]) for i in range(0, n, batch_size)]


def passes_for(n_tracks: int, batch_size: int, world: int, min_steps: int) -> int:
    """Times an epoch visits each training track so that it makes at least ``min_steps``
    optimiser steps (1 when one visit already does, or ``min_steps`` is 0).

    Args:
        n_tracks: training tracks.
        batch_size: tracks per batch, per rank.
        world: number of ranks.
        min_steps: least optimiser steps per epoch; <= 0 means no minimum.

    Returns:
        Passes, >= 1: ceil(min_steps * batch_size * world / n_tracks).
    """
    if min_steps <= 0:
        return 1
    return max(1, -(-min_steps * batch_size * world // n_tracks))


@dataclass(frozen=True)
class CropPlan:
    """Where every epoch's crops come from, for one rank: `crop_plan` with these settings."""

    lengths: np.ndarray  # int64 [n]: frames of each training track
    frames: int  # crop length
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1
    passes: int = 1  # visits of each track per epoch (see `passes_for`)

    def epoch(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """This rank's (tracks, starts) batches for ``epoch``: `crop_plan` with these settings."""
        return crop_plan(
            self.lengths,
            self.frames,
            self.batch_size,
            self.seed,
            epoch,
            self.rank,
            self.world,
            self.passes,
        )

    @property
    def steps(self) -> int:
        """Batches (optimiser steps) per epoch."""
        return len(self.lengths) * self.passes // self.world // self.batch_size


class CropPlanSampler(Sampler):
    """Yields one int64 [B, 2] array (track, start) per batch; ``set_epoch`` before iterating."""

    def __init__(self, plan: CropPlan) -> None:
        self.plan, self.epoch = plan, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose plan the next iteration yields."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[np.ndarray]:
        for tracks, starts in self.plan.epoch(self.epoch):
            yield np.stack([tracks, starts], axis=1)

    def __len__(self) -> int:
        return self.plan.steps


class CropDataset(Dataset):
    """Map-style dataset indexed by a whole batch: ``ds[int64 [B, 2]]`` -> (x, y)."""

    def __init__(self, index: SplitIndex, frames: int) -> None:
        self.index, self.frames = index, frames
        self.store = FrameStore(index.shards)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, spec: np.ndarray) -> Batch:
        tracks, starts = spec[:, 0], spec[:, 1]
        x = to_model_layout(self.store.read(self.index, tracks, starts, self.frames))
        return x, torch.from_numpy(self.index.label[tracks])


def _leave_signals_to_the_trainer(worker_id: int) -> None:
    """A terminal's Ctrl-C (and a SIGTERM to the process group) reaches the DataLoader
    workers too; a worker killed by it would make the loader raise "worker exited
    unexpectedly" before the training process could stop with exit 130/143. So workers
    ignore SIGINT and leave quietly (status 0, which the loader does not report) on
    SIGTERM, as multiprocessing also sends at exit. They still end with the training
    process (torch's loader watches its parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))


class MemmapCrops:
    """Training batches read from memmapped shards by a DataLoader (``workers`` processes)."""

    def __init__(
        self, index: SplitIndex, plan: CropPlan, workers: int = 0, pin_memory: bool = False
    ) -> None:
        self.plan = plan
        self.sampler = CropPlanSampler(plan)
        self.loader = DataLoader(
            CropDataset(index, plan.frames),
            batch_size=None,  # the sampler yields whole batches
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            # its own generator: creating worker iterators must not draw from the global
            # RNG, or an epoch's dropout/noise would depend on when workers were started
            generator=torch.Generator().manual_seed(plan.seed),
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=_leave_signals_to_the_trainer,
        )

    def __len__(self) -> int:
        return self.plan.steps

    def batches(self, epoch: int) -> Iterator[Batch]:
        """Yield ``epoch``'s (x, y) batches through the DataLoader."""
        self.sampler.set_epoch(epoch)
        yield from self.loader


class ResidentCrops:
    """`--data-on-gpu`: one float16 [total_frames, n_mels] tensor on ``device``; crops are
    cut with one gather per batch. Same plan as MemmapCrops, so the same batches."""

    def __init__(self, index: SplitIndex, plan: CropPlan, device: torch.device) -> None:
        self.index, self.plan, self.device = index, plan, device
        self.data, base = self._load(index, device)
        self.base = torch.as_tensor(base + index.start, device=device)  # [n] first frame
        self.length = torch.as_tensor(index.length, device=device)
        self.label = torch.as_tensor(index.label, device=device)
        self.steps = torch.arange(plan.frames, device=device)

    @staticmethod
    def _load(index: SplitIndex, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
        """All shards' frames concatenated; returns (data, frame offset of each track's shard)."""
        sizes = [s.mel_shape[0] for s in index.shards]
        shard_base = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        data = torch.empty((int(shard_base[-1]), index.n_mels), dtype=torch.float16, device=device)
        store = FrameStore(index.shards)
        for k, mel in enumerate(store.mels()):
            data[shard_base[k] : shard_base[k + 1]].copy_(torch.from_numpy(np.array(mel)))
        return data, shard_base[index.shard]

    def __len__(self) -> int:
        return self.plan.steps

    def batches(self, epoch: int) -> Iterator[Batch]:
        """Yield ``epoch``'s (x, y) batches, on ``device``, cut from the resident frames."""
        for tracks, starts in self.plan.epoch(epoch):
            t = torch.as_tensor(tracks, device=self.device)
            s = torch.as_tensor(starts, device=self.device)
            rows = self.base[t, None] + (s[:, None] + self.steps) % self.length[t, None]
            yield to_model_layout(self.data[rows]), self.label[t]
