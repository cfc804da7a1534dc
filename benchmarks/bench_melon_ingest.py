"""Melon ingest speed: `mrnet preprocess --dataset melon` against the floor, a plain
np.load loop over the same files in the same number of processes, in one run.

    python benchmarks/bench_melon_ingest.py [--songs 3000] [--jobs N] [--repeat 2]

The arrays have Melon's real size (float32 [48, 1876], 360 KB each, log-compressed
random values: ingest does not depend on content) in arena_mel/{id // 1000}/{id}.npy,
with a song_meta.json of 10 genres. The floor is a Python process that only loads each
array (np.load in a multiprocessing pool of --jobs processes, default: all cores, as
preprocess's default --jobs); both are timed as commands, start-up included. Preprocess
also checks every array, converts it to float16, writes the shards with their checksums
and statistics, and writes tracks.csv and the manifest.

Both are measured twice: reading from the page cache (after a warm-up pass), and from
the disk (every file's pages dropped before each side, posix_fadvise DONTNEED), as for
the real dataset (649,091 arrays, about 230 GB, more than any page cache holds).
Target: preprocess at 0.8x the floor's arrays/s or better.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.sources.melon import GENRE_NAMES, SONG_META, array_path  # noqa: E402
from pipeline.workers import local_cores  # noqa: E402

FRAMES = 1876
FLOOR = """
import sys, numpy as np
from multiprocessing import Pool
from pathlib import Path
def load(p):
    return int(np.load(p).shape[1])
if __name__ == "__main__":
    paths = sorted(Path(sys.argv[1]).glob("*/*.npy"))
    with Pool(int(sys.argv[2])) as pool:
        print(sum(pool.imap_unordered(load, paths, chunksize=64)))
"""


def write_dataset(root: Path, songs: int) -> list[Path]:
    """Melon's layout with ``songs`` random arrays; returns their paths."""
    rng = np.random.default_rng(0)
    meta, paths = [], []
    for i in range(songs):
        song = 100_000 + i
        path = array_path(root / "arena_mel", song)
        path.parent.mkdir(parents=True, exist_ok=True)
        a = np.log10(1 + 1e4 * rng.random((48, FRAMES), np.float32) ** 4).astype(np.float32)
        np.save(path, a)
        paths.append(path)
        genre = f"GN{(i % 10 + 1):02d}00"
        meta.append(
            {
                "id": song,
                "song_gn_gnr_basket": [genre],
                "song_gn_dtl_gnr_basket": [genre[:-1] + "1"],
                "artist_id_basket": [i // 4],
                "song_name": f"song {i}",
                "artist_name_basket": [f"artist {i // 4}"],
            }
        )
    (root / SONG_META).write_text(json.dumps(meta))
    names = {f"GN{k:02d}00": f"genre {k}" for k in range(1, 11)}
    (root / GENRE_NAMES).write_text(json.dumps(names))
    return paths


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (posix_fadvise DONTNEED; no root
    needed): the next read comes from the disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def floor(root: Path, jobs: int, songs: int) -> float:
    """Seconds of a Python process that np.loads every array in a pool of ``jobs``
    processes (start-up included, as for preprocess)."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", FLOOR, str(root / "arena_mel"), str(jobs)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert int(r.stdout) == FRAMES * songs
    return time.perf_counter() - t0


def preprocess(root: Path, out: Path, jobs: int) -> float:
    """Seconds of one `mrnet preprocess --dataset melon` into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        str(ROOT / "cli.py"),
        "preprocess",
        "--dataset",
        "melon",
        "--audio-dir",
        str(root / "arena_mel"),
        "--metadata-dir",
        str(root),
        "--out",
        str(out),
        "--jobs",
        str(jobs),
        "--no-progress",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songs", type=int, default=3000)
    ap.add_argument("--jobs", type=int, default=local_cores())
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="melon-bench-", dir=ROOT / "data") as tmp:
        root = Path(tmp)
        paths = write_dataset(root / "melon", a.songs)
        size = sum(p.stat().st_size for p in paths) / 2**20
        print(f"{a.songs} arrays [48, {FRAMES}] float32, {size:.0f} MiB; --jobs {a.jobs}")
        for cold in (False, True):
            where = "from the disk (page cache dropped)" if cold else "from the page cache"
            print(f"reading {where}:")
            floor(root / "melon", a.jobs, a.songs)  # warm-up
            best_floor = best_pre = float("inf")
            for k in range(a.repeat):
                if cold:
                    evict(paths)
                f = floor(root / "melon", a.jobs, a.songs)
                if cold:
                    evict(paths)
                p = preprocess(root / "melon", root / "cache", a.jobs)
                best_floor, best_pre = min(best_floor, f), min(best_pre, p)
                print(
                    f"  round {k + 1}: np.load loop {a.songs / f:6.0f} arrays/s ({f:.2f} s); "
                    f"mrnet preprocess {a.songs / p:6.0f} arrays/s ({p:.2f} s)"
                )
            print(
                f"  best of {a.repeat}: np.load loop {a.songs / best_floor:.0f} arrays/s, "
                f"mrnet preprocess {a.songs / best_pre:.0f} arrays/s: "
                f"{best_floor / best_pre:.2f}x the floor (target 0.8x)"
            )


if __name__ == "__main__":
    main()
