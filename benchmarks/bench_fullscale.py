"""fma_full costs, one run: middle clips of 5-minute MP3s against 30-s MP3s, checksum
overhead, a worker's peak memory on a 5-hour track, evaluate's peak memory on a cache
holding a 1-hour track.

    python benchmarks/bench_fullscale.py --n-per-genre 6 --jobs 2

Files: FMA-format synthetic datasets (pipeline.synth), 44.1 kHz stereo 320 kbit/s MP3s;
the 1- and 5-hour tracks are 5-minute MP3s concatenated frame by frame.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import synth  # noqa: E402
from pipeline.audio import load_audio  # noqa: E402
from pipeline.options import PreprocessOptions  # noqa: E402
from pipeline.preprocess import run as run_preprocess  # noqa: E402
from pipeline.sources.fma import audio_path  # noqa: E402


def preprocess_seconds(ds, jobs: int, audio_dir: Path | None = None, **opts) -> tuple[float, int]:
    """(seconds, tracks) of `run_preprocess` on fma_small, after a warm-up run that starts
    the worker pool (startup is noise next to a real run)."""
    with tempfile.TemporaryDirectory() as out:

        def run(name: str):
            return run_preprocess(
                PreprocessOptions(
                    audio_dir=audio_dir or ds.audio_dir,
                    metadata_dir=ds.metadata_dir,
                    out=Path(out) / name,
                    subset="small",
                    jobs=jobs,
                    progress=False,
                    **opts,
                )
            ).manifest

        run("warm")
        t = time.perf_counter()
        m = run("timed")
        return time.perf_counter() - t, m.summary["cached"] + m.summary["failed"]


def decode_ms(paths: list[Path], **kw) -> float:
    """Mean ms per file of `load_audio` (one core), after one warm-up file."""
    load_audio(paths[0], 16000, 30.0, **kw)
    t = time.perf_counter()
    for p in paths:
        load_audio(p, 16000, 30.0, **kw)
    return (time.perf_counter() - t) * 1000 / len(paths)


def clips(ds30, ds300, jobs: int) -> None:
    print("\n== 1. where the clip comes from: 5-minute MP3s --clip middle vs 30-s MP3s ==")
    p30 = [audio_path(ds30.audio_dir, t) for t in ds30.ids("small", healthy=True)][:24]
    p300 = [audio_path(ds300.audio_dir, t) for t in ds300.ids("small", healthy=True)][:24]
    a, b, c = decode_ms(p30), decode_ms(p300, clip="middle"), decode_ms(p300, clip="start")
    print(
        f"one core, decode+resample per file: 30-s file {a:.1f} ms; 5-min file, middle "
        f"30 s {b:.1f} ms ({b / a:.2f}x; target <= 2x); 5-min file, first 30 s {c:.1f} ms"
    )
    rows = []
    for name, ds, opts in (
        ("30-s MP3s", ds30, {}),
        ("5-min MP3s, --clip middle", ds300, {"clip": "middle"}),
        ("5-min MP3s, --clip start", ds300, {"clip": "start"}),
    ):
        s, n = preprocess_seconds(ds, jobs, **opts)
        rows.append((name, n / s))
        print(f"preprocess {name:<28} {n} tracks in {s:.2f} s = {n / s:.1f} tracks/s")
    print(f"ratio middle-of-5-min / 30-s: {rows[1][1] / rows[0][1]:.2f}x tracks/s")


def write_checksums(ds, where: Path) -> None:
    lines = []
    for tid in ds.ids("small"):
        p = audio_path(ds.audio_dir, tid)
        if p.exists():
            lines.append(
                f"{hashlib.sha1(p.read_bytes()).hexdigest()}  "
                f"{p.relative_to(ds.audio_dir).as_posix()}"
            )
    where.write_text("\n".join(lines) + "\n")


def checksum_overhead(ds30, ds300, jobs: int) -> None:
    print("\n== 3. checksum overhead (hash in the workers, from the bytes they decode) ==")
    for name, ds in (("30-s MP3s", ds30), ("5-min MP3s, middle clips", ds300)):
        sums = ds.root / "checksums.sha1"
        write_checksums(ds, sums)
        s0, n = preprocess_seconds(ds, jobs)
        s1, _ = preprocess_seconds(ds, jobs, verify_checksums=True, checksums=sums)
        print(
            f"{name:<26} without {n / s0:6.1f} tracks/s, with --verify-checksums "
            f"{n / s1:6.1f} tracks/s ({s1 / s0 - 1:+.1%} time)"
        )


def long_mp3(five_minutes: Path, hours: float, out: Path) -> Path:
    """A long MP3: a 5-minute MP3's frames repeated (tags and LAME header included: a
    decoder reads an Info frame mid-stream as one silent frame)."""
    data = five_minutes.read_bytes()
    with open(out, "wb") as f:
        for _ in range(round(hours * 12)):
            f.write(data)
    return out


def worker_memory(path: Path, max_seconds: float, clip: str = "middle") -> tuple[float, float]:
    """(peak RSS MB, seconds) of a fresh process that builds a one-track shard of ``path``."""
    code = (
        "import resource, sys, tempfile, time; from pathlib import Path\n"
        "from pipeline.extract import ShardJob, build_shard\n"
        "from pipeline.features import FeatureConfig\n"
        "d = Path(tempfile.mkdtemp()); (d / 'shards').mkdir()\n"
        f"job = ShardJob('shards/t.h5', 'test', (1,), (0,), ({str(path)!r},))\n"
        "t = time.perf_counter()\n"
        f"r = build_shard(job, d, FeatureConfig(max_seconds={max_seconds}, clip={clip!r}), 1.0)\n"
        "assert r.tracks == 1, r\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[-2]) / 1024, float(out[-1])


def five_hours(ds300, tmp: Path) -> None:
    print("\n== 2a. one worker on a 5-hour track (320 kbit/s, 720 MB) ==")
    src = audio_path(ds300.audio_dir, ds300.ids("small", healthy=True)[0])
    big = long_mp3(src, 5.0, tmp / "five_hours.mp3")
    print(f"file {big.stat().st_size / 1e6:.0f} MB")
    base, _ = worker_memory(src, 30.0)
    whole, s = worker_memory(big, 0.0)
    middle, s2 = worker_memory(big, 30.0)
    print(
        f"peak RSS: 5-min track, 30-s clip {base:.0f} MB; 5-h track whole (--max-seconds 0)"
        f" {whole:.0f} MB in {s:.0f} s ({5 * 3600 / s:.0f}x real time); 5-h track, middle "
        f"30 s {middle:.0f} MB in {s2:.2f} s  (limit 500 MB)"
    )
    big.unlink()


EVAL_CODE = (
    "import resource, sys, time; sys.argv = ['mrnet'] + sys.argv[1:]\n"
    "from cli import app\nt = time.perf_counter()\n"
    "try:\n    app()\nexcept SystemExit:\n    pass\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t, "
    "file=sys.stderr)\n"
)


def evaluate_memory(ds30, ds300, tmp: Path) -> None:
    """Caches of fma_small with one track replaced by a 5-minute or a 1-hour one (whole
    tracks), a model trained one epoch on the first; evaluate's peak RSS on each."""
    print("\n== 2b. evaluate's peak memory on a cache holding a 1-hour track ==")
    tid = ds30.ids("small", healthy=True)[-1]
    split = ds30.tracks.set_index("track_id").loc[tid, "split"]
    src = audio_path(ds300.audio_dir, ds300.ids("small", healthy=True)[0])
    cli = [sys.executable, str(ROOT / "cli.py")]
    caches = {}
    for hours in (5 / 60, 1.0):
        audio = tmp / f"audio{hours:.2f}"
        shutil.copytree(ds30.audio_dir, audio)
        long_mp3(src, hours, audio_path(audio, tid))
        caches[hours] = tmp / f"cache{hours:.2f}"
        run_preprocess(
            PreprocessOptions(
                audio_dir=audio,
                metadata_dir=ds30.metadata_dir,
                out=caches[hours],
                subset="small",
                max_seconds=0,
                progress=False,
            )
        )
    run = tmp / "run"
    subprocess.run(
        [
            *cli,
            "train",
            "--cache",
            str(caches[5 / 60]),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--channels",
            "64",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--no-progress",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    for hours, window in ((5 / 60, "30"), (1.0, "30"), (1.0, "0")):
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                EVAL_CODE,
                "evaluate",
                "--checkpoint",
                str(run / "best.pt"),
                "--cache",
                str(caches[hours]),
                "--split",
                split,
                "--out",
                str(tmp / "eval"),
                "--window",
                window,
                "--device",
                "cpu",
                "--no-progress",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        rss, secs = r.stderr.split()[-2:]
        longest = "1-h" if hours == 1.0 else "5-min"
        print(
            f"evaluate --split {split} (with a {longest} track), --window {window:>2}: "
            f"peak RSS {int(rss) / 1024:.0f} MB, {float(secs):.1f} s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-per-genre", type=int, default=6)
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--data", type=Path, help="keep the datasets here (default: a temp dir)")
    ap.add_argument(
        "--only", default="clips,5h,evaluate,checksums", help="sections to run, comma-separated"
    )
    a = ap.parse_args()
    only = set(a.only.split(","))
    root = a.data or Path(tempfile.mkdtemp(prefix="mrnet-bench-full-"))
    t = time.perf_counter()
    ds30 = synth.generate(root / "s30", a.n_per_genre, 30.0, jobs=a.jobs, reuse=True)
    ds300 = synth.generate(root / "s300", a.n_per_genre, 300.0, jobs=a.jobs, reuse=True)
    print(f"datasets ready in {time.perf_counter() - t:.0f} s under {root}")
    if "clips" in only:
        clips(ds30, ds300, a.jobs)
    if "5h" in only:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            five_hours(ds300, Path(tmp))
    if "evaluate" in only:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            evaluate_memory(ds30, ds300, Path(tmp))
    if "checksums" in only:
        checksum_overhead(ds30, ds300, a.jobs)
    if a.data is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
