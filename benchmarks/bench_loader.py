"""Training-crop throughput on ONE core from memmapped shards (mrnet.data).

    python benchmarks/bench_loader.py [--tracks 2000] [--seconds 30] [--batch 48]

Builds a synthetic cache (default 2,000 x 30-s tracks, 128 mels, float16: ~770 MB)
in a temporary directory and times 6-s crops (300 frames x 128 mels at 50 frames/s),
delivered as float32 [batch, 128, 300] tensors:

  batched     mrnet.data.MemmapCrops, workers=0: the sampler yields whole batches,
              one Python call per batch (what `mrnet train` uses)
  per-item    the conventional map-style dataset: one __getitem__ per crop from the
              same memmaps + default_collate (the baseline the batched path replaces)
  resident    mrnet.data.ResidentCrops on the CPU (the `--data-on-gpu` gather path)

Each is measured with the shards in the page cache (warm) and, for the batched path,
after posix_fadvise(DONTNEED) on the shard files (cold: read from disk; one core
issues one synchronous read at a time, so DataLoader workers help there).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrnet.data import CropPlan, MemmapCrops, ResidentCrops  # noqa: E402
from pipeline.cache import SplitIndex, Track, open_cache, split_index, write_cache  # noqa: E402
from pipeline.features import FeatureConfig  # noqa: E402


def synthetic_cache(
    root: Path,
    n_tracks: int,
    seconds: float = 30.0,
    n_mels: int = 128,
    n_classes: int = 8,
    shard_size: int = 128,
    n_val: int = 0,
) -> Path:
    """A complete cache of random log-mel-like tracks (all `training`, plus ``n_val``
    `validation` tracks); labels cycle through ``n_classes``."""
    fc = FeatureConfig(n_mels=n_mels).to_dict()
    frames = round(seconds * FeatureConfig(n_mels=n_mels).frames_per_second) + 1
    rng = np.random.default_rng(0)

    def tracks():
        tid = 1
        for split, n in (("training", n_tracks), ("validation", n_val)):
            for _ in range(n):
                mel = rng.standard_normal((frames, n_mels), dtype=np.float32) - 4.0
                yield Track(tid, split, tid % n_classes, mel, seconds)
                tid += 1

    write_cache(root, fc, [f"g{c}" for c in range(n_classes)], tracks(), shard_size, subset="small")
    return root


class PerItemCrops(Dataset):
    """Baseline: one random crop per __getitem__ (memmap slice -> float32 [n_mels, frames])."""

    def __init__(self, index: SplitIndex, frames: int) -> None:
        self.index, self.frames = index, frames
        self.rng = np.random.default_rng(0)
        self.mels = [s.memmap() for s in index.shards]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, t: int):
        ix, n = self.index, self.frames
        s = int(self.rng.integers(0, max(int(ix.length[t]) - n, 0) + 1))
        a = int(ix.start[t]) + s
        x = torch.from_numpy(np.ascontiguousarray(self.mels[ix.shard[t]][a : a + n].T))
        return x.float(), int(ix.label[t])


def timed(batches, limit: int) -> tuple[float, int]:
    """(crops/s, crops) over at most ``limit`` batches, after one warm-up batch."""
    it = iter(batches)
    next(it)
    n, t0 = 0, time.perf_counter()
    for i, (x, _) in enumerate(it):
        n += x.shape[0]
        if i + 1 >= limit:
            break
    return n / (time.perf_counter() - t0), n


def drop_page_cache(paths) -> None:
    """posix_fadvise(DONTNEED) on these files: the next read comes from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--crop-seconds", type=float, default=6.0)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--batches", type=int, default=100, help="most batches timed per run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = synthetic_cache(Path(tmp) / "cache", args.tracks, args.seconds)
        size = sum(p.stat().st_size for p in root.rglob("*.h5"))
        print(
            f"cache: {args.tracks} x {args.seconds:.0f}-s tracks, 128 mels, "
            f"{size / 2**20:.0f} MiB, built in {time.perf_counter() - t0:.1f} s"
        )
        index = split_index(open_cache(root), "training")
        frames = round(args.crop_seconds * 50)
        b, lim = args.batch, args.batches
        print(f"crops: {frames} frames x 128 mels, batch {b}, 1 core, float32 [B, 128, {frames}]")

        drop_page_cache(s.path for s in index.shards)
        plan = CropPlan(index.length, frames, b, seed=0)
        cold, _ = timed(MemmapCrops(index, plan).batches(1), lim)
        warm, n = timed(MemmapCrops(index, plan).batches(2), lim)
        loader = DataLoader(PerItemCrops(index, frames), batch_size=b, shuffle=True)
        per_item, _ = timed(loader, lim)
        resident = ResidentCrops(index, plan, device=torch.device("cpu"))
        res, _ = timed(resident.batches(1), lim)
        print(f"batched memmap, warm cache : {warm:8.0f} crops/s  ({n} crops)")
        print(f"batched memmap, cold cache : {cold:8.0f} crops/s  (after fadvise DONTNEED)")
        print(f"per-item memmap + collate  : {per_item:8.0f} crops/s")
        print(f"resident (gather, CPU)     : {res:8.0f} crops/s")
        print(f"batched / per-item         : {warm / per_item:8.2f} x")
        print(f"target 5,000 crops/s       : {'met' if warm >= 5000 else 'NOT met'} (warm)")


if __name__ == "__main__":
    main()
