"""Preprocess throughput through a dask cluster vs local loky processes, same machine.

    python benchmarks/bench_dask.py --tracks 96 --workers 2

A loopback LocalCluster of ``--workers`` single-threaded worker processes against
``--jobs`` loky processes: the ratio is the overhead of the cluster path.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import synth  # noqa: E402
from pipeline.options import PreprocessOptions  # noqa: E402
from pipeline.preprocess import run as run_preprocess  # noqa: E402


def timed(ds, out: Path, **kw) -> tuple[float, int]:
    """Seconds and tracks of a full run, after an untimed warm-up run (warm workers)."""
    base = dict(
        audio_dir=ds.audio_dir, metadata_dir=ds.metadata_dir, subset="small", progress=False, **kw
    )
    run_preprocess(PreprocessOptions(out=out / "warm", **base))
    t = time.perf_counter()
    m = run_preprocess(PreprocessOptions(out=out / "timed", **base)).manifest
    return time.perf_counter() - t, m.summary["cached"] + m.summary["failed"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", type=int, default=96)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=8)
    ap.add_argument("--data", type=Path)
    a = ap.parse_args()
    from dask.distributed import LocalCluster

    root = a.data or Path(tempfile.mkdtemp(prefix="mrnet-bench-dask-"))
    ds = synth.generate(
        root, n_per_genre=max(1, a.tracks // 8), seconds=30.0, jobs=a.workers, reuse=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        t_loky, n = timed(ds, Path(tmp) / "loky", jobs=a.workers, shard_size=a.shard_size)
        with LocalCluster(
            n_workers=a.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster:
            t_dask, _ = timed(
                ds,
                Path(tmp) / "dask",
                backend="dask",
                scheduler=cluster.scheduler_address,
                shard_size=a.shard_size,
            )
    print(f"{n} tracks (30-s MP3s), {a.workers} processes, {a.shard_size}-track shards")
    print(f"loky (local processes)   {n / t_loky:7.2f} tracks/s")
    print(f"dask (LocalCluster)      {n / t_dask:7.2f} tracks/s")
    print(f"dask / loky = {t_loky / t_dask:.2f}x")


if __name__ == "__main__":
    main()
