"""What checking a cache costs: the header checks every train/evaluate run does, and the
full pass of `mrnet verify` / `mrnet train --verify` (checksums and finite frames), on an
fma_small-sized cache (8,000 x 30-s tracks, 128 mels, float16: about 3 GB).

    python benchmarks/bench_verify.py [--tracks 8000] [--keep DIR]

The full pass is timed twice: with the shards in the page cache (warm: hashing speed),
and after posix_fadvise(DONTNEED) on every shard (cold: what the disk delivers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loader import drop_page_cache, synthetic_cache  # noqa: E402

from pipeline.cache import open_cache  # noqa: E402
from pipeline.cache.verify import verify_cache  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=8000)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the cache here")
    a = ap.parse_args()
    tmp = None if a.keep else tempfile.TemporaryDirectory()
    root = a.keep or Path(tmp.name) / "cache"
    if not (root / "manifest.json").exists():
        t = time.perf_counter()
        synthetic_cache(root, a.tracks, n_val=a.tracks // 8)
        print(f"built the cache in {time.perf_counter() - t:.0f} s")
    gb = sum(p.stat().st_size for p in (root / "shards").glob("*.h5")) / 1e9
    t = time.perf_counter()
    open_cache(root)
    header = time.perf_counter() - t
    verify_cache(root, progress=False)  # warm the page cache
    t = time.perf_counter()
    r = verify_cache(root, progress=False)
    warm = time.perf_counter() - t
    drop_page_cache((root / "shards").glob("*.h5"))
    t = time.perf_counter()
    verify_cache(root, progress=False)
    cold = time.perf_counter() - t
    print(f"cache: {r.tracks} tracks in {r.shards} shards, {gb:.2f} GB; all sound: {r.ok}")
    print(f"header checks (open_cache: headers, checksum records, labels): {header:.2f} s")
    print(
        f"full pass (checksums + finite frames), warm page cache: {warm:.1f} s "
        f"({gb / warm:.2f} GB/s)"
    )
    print(f"full pass, cold (after fadvise DONTNEED): {cold:.1f} s ({gb / cold:.2f} GB/s)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
