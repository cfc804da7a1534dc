"""Training and validation batches from a cache's memmapped shards.

    SplitIndex     where every track of one split lies (shard, first frame, length, label)
    crop_plan      a rank's share of the epoch's (track, start frame) pairs: a pure function
                   of (seed, epoch, rank, world); the ranks' shares are disjoint
    MemmapCrops    crops read from the shards through numpy.memmap (DataLoader, batch-level)
    ResidentCrops  `--data-on-gpu`: all training frames in one device tensor, crops by gather
    whole_tracks   validation batches of whole tracks of equal length

Every batch is ``(x, y)``: x float32 [batch, n_mels, frames], y int64 [batch] labels.
Training epochs visit a random permutation of the tracks, one crop each, full batches
only (BatchNorm needs more than one example). A crop starts uniformly in
[0, length - crop]; a track shorter than the crop is wrap-padded (its frames repeat
from its start). Shards are opened with h5py once, in the main process, to read
their index; frames are only ever read through memmaps opened lazily per process.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.errors import BadInput
from pipeline.manifest import Cache
from pipeline.shards import ShardIndex

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class SplitIndex:
    """The tracks of one split, in tracks.csv order. Arrays are [n] unless noted."""

    shards: tuple[ShardIndex, ...]
    shard: np.ndarray  # int64: index into ``shards``
    start: np.ndarray  # int64: first frame of the track in its shard's ``mel``
    length: np.ndarray  # int64: frames (> 0)
    label: np.ndarray  # int64
    track_id: np.ndarray  # int64
    n_mels: int

    def __len__(self) -> int:
        return len(self.track_id)

    def subset(self, rows: np.ndarray) -> SplitIndex:
        """The tracks ``rows`` (int64 [k], positions in this index), same shards."""
        return dataclasses.replace(
            self,
            shard=self.shard[rows],
            start=self.start[rows],
            length=self.length[rows],
            label=self.label[rows],
            track_id=self.track_id[rows],
        )

    def share(self, rank: int, world: int) -> SplitIndex:
        """Rank ``rank``'s disjoint share of ``world`` (tracks rank, rank + world, ...);
        the shares of ranks 0 .. world-1 together hold every track once."""
        return self.subset(np.arange(rank, len(self), world, dtype=np.int64))


def split_index(cache: Cache, split: str) -> SplitIndex:
    """Index ``split`` of an opened cache; labels and lengths come from the shards."""
    rows = cache.split(split)
    names = sorted(set(rows["shard"]))
    shards = tuple(cache.shards[n] for n in names)
    pos = {n: i for i, n in enumerate(names)}
    shard = rows["shard"].map(pos).to_numpy(np.int64)
    row = rows["row"].to_numpy(np.int64)
    start = np.zeros(len(rows), np.int64)
    end = np.zeros(len(rows), np.int64)
    label = np.zeros(len(rows), np.int64)
    track_id = np.zeros(len(rows), np.int64)
    for k, s in enumerate(shards):
        sel = shard == k
        if len(row[sel]) and row[sel].max() >= len(s):
            raise BadInput(f"tracks.csv points past the end of {s.path}; rerun `mrnet preprocess`")
        start[sel] = s.offsets[row[sel]]
        end[sel] = s.offsets[row[sel] + 1]
        label[sel] = s.label[row[sel]]
        track_id[sel] = s.track_id[row[sel]]
    if not np.array_equal(track_id, rows["track_id"].to_numpy(np.int64)) or not np.array_equal(
        label, rows["label"].to_numpy(np.int64)
    ):
        raise BadInput(
            f"tracks.csv of {cache.root} disagrees with its shards; run `mrnet verify "
            f"{cache.root}` and rerun the same `mrnet preprocess` command"
        )
    return SplitIndex(
        shards=shards,
        shard=shard,
        start=start,
        length=end - start,
        label=label,
        track_id=track_id,
        n_mels=int(cache.feature_config["n_mels"]),
    )


class FrameStore:
    """Read-only float16 [frames, n_mels] arrays of a split's shards, memmapped lazily.

    The maps are (re)opened on first use in each process, so a store can be pickled
    into DataLoader workers; no h5py handle is ever involved.
    """

    def __init__(self, shards: tuple[ShardIndex, ...]) -> None:
        self.shards = shards
        self._pid: int | None = None
        self._mels: list[np.ndarray] = []

    def __getstate__(self) -> dict:
        return {"shards": self.shards, "_pid": None, "_mels": []}

    def mels(self) -> list[np.ndarray]:
        if self._pid != os.getpid():
            # plain ndarray views: slicing a np.memmap subclass costs microseconds per item
            self._mels = [s.memmap().view(np.ndarray) for s in self.shards]
            self._pid = os.getpid()
        return self._mels

    def read(
        self, index: SplitIndex, tracks: np.ndarray, starts: np.ndarray, frames: int
    ) -> np.ndarray:
        """Float16 [len(tracks), frames, n_mels]: frames from ``starts`` on, wrapping."""
        mels = self.mels()
        out = np.empty((len(tracks), frames, index.n_mels), np.float16)
        for i, (t, s) in enumerate(zip(tracks.tolist(), starts.tolist())):
            mel = mels[index.shard[t]]
            a, n = int(index.start[t]), int(index.length[t])
            if s + frames <= n:
                out[i] = mel[a + s : a + s + frames]
            else:
                out[i] = mel[a + (s + np.arange(frames)) % n]
        return out


def to_model_layout(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Float16 [b, frames, n_mels] -> contiguous float32 [b, n_mels, frames] (one pass)."""
    x = torch.as_tensor(frames)
    out = torch.empty((x.shape[0], x.shape[2], x.shape[1]), dtype=torch.float32, device=x.device)
    return out.copy_(x.transpose(1, 2))


def crop_plan(
    lengths: np.ndarray,
    frames: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """An epoch's batches of (track indices int64 [B], start frames int64 [B]) for one rank.

    The permutation depends on (seed, epoch) only, so all ranks agree on it and take
    disjoint strided slices of its first ``len // world * world`` tracks; crop starts
    depend on (seed, epoch, rank). Every rank gets the same number of batches,
    ``len(lengths) // world // batch_size`` (DDP needs equal step counts); incomplete
    batches are dropped, so an epoch skips fewer than ``world * batch_size`` tracks.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    per_rank = len(order) // world
    mine = order[: per_rank * world][rank::world]
    rng = np.random.default_rng([seed, epoch, rank])
    starts = rng.integers(0, np.maximum(lengths[mine] - frames, 0) + 1)
    n = len(mine) // batch_size * batch_size
    return [(mine[i : i + batch_size], starts[i : i + batch_size]) for i in range(0, n, batch_size)]


class CropPlanSampler(Sampler):
    """Yields one int64 [B, 2] array (track, start) per batch; ``set_epoch`` before iterating."""

    def __init__(
        self,
        lengths: np.ndarray,
        frames: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.args = (lengths, frames, batch_size, seed)
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self) -> list[tuple[np.ndarray, np.ndarray]]:
        lengths, frames, batch_size, seed = self.args
        return crop_plan(lengths, frames, batch_size, seed, self.epoch, self.rank, self.world)

    def __iter__(self) -> Iterator[np.ndarray]:
        for tracks, starts in self._plan():
            yield np.stack([tracks, starts], axis=1)

    def __len__(self) -> int:
        lengths, _, batch_size, _ = self.args
        return len(lengths) // self.world // batch_size


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


class MemmapCrops:
    """Training batches read from memmapped shards by a DataLoader (``workers`` processes)."""

    def __init__(
        self,
        index: SplitIndex,
        frames: int,
        batch_size: int,
        seed: int,
        workers: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.sampler = CropPlanSampler(index.length, frames, batch_size, seed, rank, world)
        self.loader = DataLoader(
            CropDataset(index, frames),
            batch_size=None,  # the sampler yields whole batches
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            # its own generator: creating worker iterators must not draw from the global
            # RNG, or an epoch's dropout/noise would depend on when workers were started
            generator=torch.Generator().manual_seed(seed),
            prefetch_factor=4 if workers > 0 else None,
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The epoch's (track positions, start frames) per batch, in `batches` order."""
        lengths, frames, batch_size, seed = self.sampler.args
        rank, world = self.sampler.rank, self.sampler.world
        return crop_plan(lengths, frames, batch_size, seed, epoch, rank, world)

    def batches(self, epoch: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        yield from self.loader


class ResidentCrops:
    """`--data-on-gpu`: one float16 [total_frames, n_mels] tensor on ``device``; crops are
    cut with one gather per batch. Same plan as MemmapCrops, so the same batches."""

    def __init__(
        self,
        index: SplitIndex,
        frames: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.index, self.frames, self.device = index, frames, device
        self.args = (batch_size, seed, rank, world)
        self.data, base = self._load(index, device)
        self.base = torch.as_tensor(base + index.start, device=device)  # [n] first frame
        self.length = torch.as_tensor(index.length, device=device)
        self.label = torch.as_tensor(index.label, device=device)
        self.steps = torch.arange(frames, device=device)

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
        batch_size, _, _, world = self.args
        return len(self.index) // world // batch_size

    def plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The epoch's (track positions, start frames) per batch, in `batches` order."""
        batch_size, seed, rank, world = self.args
        return crop_plan(self.index.length, self.frames, batch_size, seed, epoch, rank, world)

    def batches(self, epoch: int) -> Iterator[Batch]:
        for tracks, starts in self.plan(epoch):
            t = torch.as_tensor(tracks, device=self.device)
            s = torch.as_tensor(starts, device=self.device)
            rows = self.base[t, None] + (s[:, None] + self.steps) % self.length[t, None]
            yield to_model_layout(self.data[rows]), self.label[t]


def whole_tracks(
    index: SplitIndex, max_frames: int
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Batches (rows, x, y) of whole tracks grouped by equal length, shortest first.

    A batch of length-n tracks holds max(1, max_frames // n) of them, so its size in
    frames stays near ``max_frames``; rows int64 [b] (positions in ``index``),
    x float32 [b, n_mels, n], y int64 [b].
    """
    store = FrameStore(index.shards)
    groups: dict[int, list[int]] = defaultdict(list)
    for t, n in enumerate(index.length.tolist()):
        groups[n].append(t)
    for n, members in sorted(groups.items()):
        per_batch = max(1, max_frames // n)
        for i in range(0, len(members), per_batch):
            tracks = np.array(members[i : i + per_batch], np.int64)
            x = store.read(index, tracks, np.zeros(len(tracks), np.int64), n)
            yield tracks, to_model_layout(x), torch.from_numpy(index.label[tracks])
