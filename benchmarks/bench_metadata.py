"""Fixed costs of a run at FMA's full size: a tracks.csv of 106,574 rows and 52 columns
(~250 MB of synthetic text, real columns), one run.

    python benchmarks/bench_metadata.py [--tracks 106574] [--jobs 2]

Measures, each in seconds:
  1. metadata load, selection (--subset large), the file-presence check, the plan, the
     checksums lookup: the steps before any decoding;
  2. a --subset large run over an audio folder holding a few hundred of the files (the
     user with fma_small audio who passes the wrong subset): how soon it refuses;
  3. a full run whose every track has a (tiny, 1.5-s) file, phase by phase: selection,
     checks, plan, decoding, the finish (tracks.csv, failures.csv, manifest);
  4. `mrnet info CACHE`, opening the cache as train/evaluate do, and a rerun that finds
     every shard done.
Every audio file is a hard link to one 1.5-s MP3, so that decoding costs little and the
fixed costs show.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipeline.preprocess as pre  # noqa: E402
from pipeline.cache.reader import open_cache, split_index  # noqa: E402
from pipeline.cache.writer import CacheWriter  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.options import PreprocessOptions  # noqa: E402
from pipeline.sources import checksums, fma  # noqa: E402
from pipeline.synth import encode_mp3  # noqa: E402
from pipeline.synth.metadata import full_size_metadata  # noqa: E402

PHASES: dict[str, float] = defaultdict(float)


@contextlib.contextmanager
def clock(name: str):
    t = time.perf_counter()
    yield
    PHASES[name] += time.perf_counter() - t


def timed(obj, attr: str, name: str) -> None:
    """Wrap ``obj.attr`` so that its time adds to PHASES[name]."""
    fn = getattr(obj, attr)

    def wrapper(*a, **k):
        with clock(name):
            return fn(*a, **k)

    setattr(obj, attr, wrapper)


def report(title: str) -> None:
    print(title)
    for k, v in PHASES.items():
        print(f"  {k:<44} {v:7.2f} s")
    PHASES.clear()


def link_audio(audio: Path, ids, source: Path) -> None:
    for tid in ids:
        p = fma.audio_path(audio, tid)
        p.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, p)


def cli(*argv: str) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *argv], cwd=ROOT, capture_output=True, text=True
    )
    return time.perf_counter() - t, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", type=int, default=106_574)
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mrnet-bench-meta-"))
    meta = tmp / "fma_metadata"
    t = time.perf_counter()
    specs = full_size_metadata(meta, a.tracks)
    size = (meta / "tracks.csv").stat().st_size
    print(
        f"tracks.csv: {a.tracks} rows, 52 columns, {size / 1e6:.0f} MB "
        f"(written in {time.perf_counter() - t:.0f} s)"
    )
    clip = tmp / "clip.mp3"
    rng = np.random.default_rng(0)
    clip.write_bytes(
        encode_mp3((rng.standard_normal((66150, 2)) * 0.1).astype(np.float32), 44100, 128)
    )

    # 1. the steps before decoding, one by one
    audio = tmp / "fma_large"
    with clock("metadata load (tracks.csv, genres.csv)"):
        tracks = fma.load_tracks(
            meta, columns=(*fma.REQUIRED_COLUMNS, ("artist", "name"), ("track", "title"))
        )
        genres = fma.load_genres(meta)
    with clock("selection (--subset large, genre_top)"):
        fma.check_genre_titles(tracks, genres, meta / "tracks.csv")
        sel = fma.select(tracks, "large")
    with clock("read_selection (load + select + paths)"):
        sel = fma.read_selection(meta, "large", audio)
    n = len(sel.tracks)
    paths = sel.tracks["path"].tolist()
    link_audio(audio, [s.track_id for s in specs if s.genre_top][:300], clip)
    with clock("file presence, 300 of the files there"):
        present, _ = pre._file_presence(paths)
    with clock("plan (shard jobs + fingerprint)"):
        pre._plan(
            PreprocessOptions(audio_dir=audio, out=tmp / "x", metadata_dir=meta),
            PreprocessOptions(audio_dir=audio, out=tmp / "x").feature_config(),
            sel,
            pre.auto_shard_size(n),
        )
    sums = {
        Path(p).relative_to(audio).as_posix(): hashlib.sha1(p.encode()).hexdigest() for p in paths
    }
    where = tmp / "checksums"
    where.write_text("".join(f"{v}  {k}\n" for k, v in sums.items()))
    with clock("checksums file read + lookup"):
        checksums.expected_sha1s(paths, audio, checksums.read_checksums(where), where)
    report(f"1. before decoding ({n} tracks selected, {present} with a file):")

    # 2. the wrong subset: refused before starting
    out = tmp / "cache"
    common = [
        "--audio-dir",
        str(audio),
        "--metadata-dir",
        str(meta),
        "--out",
        str(out),
        "--jobs",
        str(a.jobs),
        "--no-progress",
    ]
    secs, r = cli("preprocess", "--subset", "large", *common)
    print(
        f"2. --subset large over 300 files: exit {r.returncode} after {secs:.1f} s "
        f"(whole process): {r.stderr.strip().splitlines()[-1]}"
    )

    # 3. a full run: every selected track has a file
    link_audio(audio, [s.track_id for s in specs if s.genre_top][300:], clip)
    timed(pre, "selection", "selection (load + select + paths)")
    timed(pre, "_check_files", "file presence (+ checksums: none here)")
    timed(pre, "_plan", "plan")
    timed(pre, "_run", "decoding (jobs, 1.5-s tracks)")
    timed(CacheWriter, "finish", "finish (tracks.csv, failures.csv, manifest)")
    opts = PreprocessOptions(
        audio_dir=audio, metadata_dir=meta, out=out, subset="large", jobs=a.jobs, progress=False
    )
    t = time.perf_counter()
    m = pre.run(opts).manifest
    total = time.perf_counter() - t
    decoding = PHASES["decoding (jobs, 1.5-s tracks)"]
    report(
        f"3. full run, {m.summary['cached']} tracks cached in {len(m.shards)} shards: "
        f"{total:.1f} s, of which fixed {total - decoding:.1f} s"
    )

    # 4. reading it back, and a rerun that finds every shard done
    secs, r = cli("info", str(out))
    assert r.returncode == 0, r.stderr
    print(f"4. mrnet info CACHE (whole process): {secs:.2f} s")
    with clock("open_cache + split_index(training)"):
        split_index(open_cache(out), "training")
    report("   opening the cache as train/evaluate do:")
    secs, r = cli("preprocess", "--subset", "large", *common)
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    print(
        f"   rerun of the finished run (whole process): {secs:.1f} s: "
        f"{r.stderr.strip().splitlines()[0]}"
    )
    (out / "tracks.csv").unlink()  # as if killed right before its finish
    secs, r = cli("preprocess", "--subset", "large", *common)
    assert r.returncode == 0, r.stderr
    print(
        f"   rerun after a kill before the finish (every shard done): {secs:.1f} s: "
        f"{[x for x in r.stderr.splitlines() if 'resuming' in x][0]}"
    )
    subprocess.run(["rm", "-rf", str(tmp)], check=True)


if __name__ == "__main__":
    try:
        main()
    except BadInput as e:
        sys.exit(f"error: {e}")
