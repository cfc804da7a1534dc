"""Preprocess throughput on GTZAN-format files (30-s 22,050 Hz mono 16-bit .au and .wav)
against the decode-only floor on the same files, same processes, one run.

    python benchmarks/bench_gtzan.py [--per-genre 20] [--jobs 2]

Every file is selected (5-fold cross-validation, fold 0), so both contenders see the same
files. (a) decodes each file (pipeline.audio.decode) in a warm joblib pool; (c) is
`run_preprocess` with default settings after a warm-up run, and (d) the whole
`mrnet preprocess` process (interpreter start to exit).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_preprocess import _decode_only, timed_parallel  # noqa: E402

from pipeline.options import PreprocessOptions  # noqa: E402
from pipeline.preprocess import run as run_preprocess  # noqa: E402
from pipeline.synth import gtzan  # noqa: E402


def run(audio_dir: Path, jobs: int, out: Path) -> float:
    opts = PreprocessOptions(
        audio_dir=audio_dir, out=out, dataset="gtzan", folds=5, fold=0, jobs=jobs, progress=False
    )
    t = time.perf_counter()
    run_preprocess(opts)
    return time.perf_counter() - t


def whole(audio_dir: Path, out: Path) -> float:
    import subprocess

    cmd = [
        sys.executable,
        str(ROOT / "cli.py"),
        "preprocess",
        "--dataset",
        "gtzan",
        "--audio-dir",
        str(audio_dir),
        "--out",
        str(out),
        "--folds",
        "5",
        "--fold",
        "0",
    ]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-genre", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--data", type=Path, help="generate (or reuse) the datasets here")
    a = ap.parse_args()
    root = a.data or Path(tempfile.mkdtemp(prefix="mrnet-bench-gtzan-"))
    for layout in ("original", "kaggle"):
        ds = gtzan.generate(root / layout, layout, a.per_genre, 30.0, jobs=a.jobs)
        paths = [str(p) for t, p in sorted(ds.files.items()) if t not in ds.broken]
        for p in paths:
            Path(p).read_bytes()  # page cache warm for both
        ta = timed_parallel(_decode_only, paths, a.jobs)
        with tempfile.TemporaryDirectory() as tmp:
            run(ds.audio_dir, a.jobs, Path(tmp) / "warm")  # starts the worker pool
            tc = run(ds.audio_dir, a.jobs, Path(tmp) / "c")
            td = min(whole(ds.audio_dir, Path(tmp) / f"d{i}") for i in range(2))
        ra, rc, rd = (len(paths) / t for t in (ta, tc, td))
        kind = ".au (original archive)" if layout == "original" else ".wav (Kaggle)"
        print(f"{len(paths)} x 30-s {kind}, {a.jobs} processes:")
        print(f"  (a) decode only                 {ra:7.1f} tracks/s")
        print(f"  (c) mrnet preprocess, warm pool {rc:7.1f} tracks/s   c/a = {rc / ra:.2f}x")
        print(f"  (d) whole process, defaults     {rd:7.1f} tracks/s   d/a = {rd / ra:.2f}x")


if __name__ == "__main__":
    main()
