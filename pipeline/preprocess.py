"""`mrnet preprocess`: plan shard jobs, run them in parallel, resume, write the manifest.

Data flow::

    tracks.csv ─select─▶ Selection ─plan_shards─▶ [ShardJob]
        ─build_shard × jobs─▶ shards/*.h5 ─finish─▶ manifest.json, tracks.csv, failures.csv

The plan is deterministic (tracks sorted by id within each split, cut into shards of
``shard_size``), so a rerun builds exactly the missing shards: a shard file that
exists is final (written under a unique temporary name, renamed when complete).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline import __version__, fma
from pipeline.errors import BadInput
from pipeline.features import FeatureConfig
from pipeline.lock import CacheLock
from pipeline.manifest import (
    FAILURE_COLUMNS,
    FAILURES,
    MANIFEST,
    SHARDS_DIR,
    TRACK_COLUMNS,
    TRACKS,
    Manifest,
    dir_bytes,
    write_atomic,
)
from pipeline.shards import PARTIAL_SUFFIX, ShardError, read_shard


@dataclass
class PreprocessOptions:
    """Arguments of `mrnet preprocess` (see its --help)."""

    audio_dir: Path
    metadata_dir: Path
    out: Path
    subset: str = "small"
    jobs: int | None = None  # None: all cores
    sample_rate: int = 16000
    n_mels: int = 128
    n_fft: int = 1024
    hop_length: int = 320
    f_max: float = 0.0  # 0: Nyquist
    max_seconds: float = 30.0
    min_seconds: float = 1.0
    shard_size: int = 128
    backend: str = "loky"  # "loky": local processes; "dask": a dask.distributed cluster
    scheduler: str | None = None  # dask scheduler address, e.g. tcp://host:8786
    progress: bool = True

    def feature_config(self) -> FeatureConfig:
        try:
            return FeatureConfig(
                sample_rate=self.sample_rate,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                n_mels=self.n_mels,
                f_max=self.f_max or self.sample_rate / 2,
                max_seconds=self.max_seconds,
            )
        except ValueError as e:
            raise BadInput(f"invalid feature settings: {e}") from e


BACKENDS = ("loky", "dask")


@dataclass(frozen=True)
class ShardJob:
    """One unit of parallel work: the tracks of one shard file."""

    name: str  # relative to the cache root, e.g. "shards/training-00000.h5"
    split: str
    track_ids: tuple[int, ...]
    labels: tuple[int, ...]


@dataclass
class ShardResult:
    name: str
    tracks: int
    failed: int
    seconds_audio: float
    failures: Counter = field(default_factory=Counter)


def plan_shards(selection: fma.Selection, shard_size: int) -> list[ShardJob]:
    """Deterministic plan: per split (FMA order), tracks sorted by id, cut every shard_size."""
    jobs = []
    for split in fma.SPLITS:
        part = selection.tracks[selection.tracks["split"] == split].sort_values("track_id")
        ids = part["track_id"].to_numpy()
        labels = part["label"].to_numpy()
        for k, start in enumerate(range(0, len(ids), shard_size)):
            jobs.append(
                ShardJob(
                    name=f"{SHARDS_DIR}/{split}-{k:05d}.h5",
                    split=split,
                    track_ids=tuple(int(t) for t in ids[start : start + shard_size]),
                    labels=tuple(int(x) for x in labels[start : start + shard_size]),
                )
            )
    return jobs


def build_shard(
    job: ShardJob,
    cache_dir: Path,
    audio_dir: Path,
    cfg: FeatureConfig,
    min_seconds: float,
) -> ShardResult:
    """Decode and featurise the job's tracks into one shard (runs in a worker process)."""
    # Workers never import torch (~480 MB per process) and run single-threaded numpy/scipy
    # (loky's inner_max_num_threads=1): n busy workers on n cores, no oversubscription.
    from pipeline.audio import DecodeError, load_audio
    from pipeline.features import log_mel
    from pipeline.shards import ShardWriter

    path = cache_dir / job.name
    writer = ShardWriter(path, cfg.to_dict(), job.split)
    result = ShardResult(job.name, 0, 0, 0.0)
    for tid, label in zip(job.track_ids, job.labels):
        try:
            x = load_audio(
                fma.audio_path(audio_dir, tid), cfg.sample_rate, cfg.max_seconds, min_seconds
            )
        except DecodeError as e:
            writer.fail(tid, e.reason)
            result.failures[e.reason] += 1
            continue
        writer.add(tid, label, log_mel(x, cfg), len(x) / cfg.sample_rate)
        result.seconds_audio += len(x) / cfg.sample_rate
    writer.commit()
    result.tracks = len(job.track_ids) - sum(result.failures.values())
    result.failed = sum(result.failures.values())
    return result


def _check_out_dir(out: Path, plan: dict) -> Manifest | None:
    """Refuse an --out that is a file, a foreign folder, or a cache of other settings."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; pass a directory path for the cache")
    if not out.is_dir():
        return None
    manifest_path = out / MANIFEST
    if not manifest_path.exists():
        visible = [
            p
            for p in out.iterdir()
            if not p.name.startswith(".")
            and not (p.name == SHARDS_DIR and p.is_dir() and not any(p.iterdir()))
        ]
        if visible:
            raise BadInput(
                f"--out {out} is a non-empty folder that is not an mrnet cache; "
                "choose a new or empty folder"
            )
        return None
    old = Manifest.read(out)
    if old.plan != plan:
        raise BadInput(
            f"cache {out} was built with other settings ({_plan_diff(old.plan, plan)}); "
            "rerun with the original settings and metadata or choose another --out"
        )
    return old


def _plan_diff(old: dict, new: dict) -> str:
    """'key: old -> new' for what differs, one level into nested dicts."""
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            parts += [
                f"{k2}: {a.get(k2)} -> {b.get(k2)}"
                for k2 in sorted(set(a) | set(b))
                if a.get(k2) != b.get(k2)
            ]
        elif k == "tracks_sha256":
            parts.append("the selected tracks (tracks.csv changed?)")
        else:
            parts.append(f"{k}: {a} -> {b}")
    return ", ".join(parts)


def _fingerprint(jobs: list[ShardJob]) -> str:
    """Hash of the plan's content: which track, with which label, lands in which shard."""
    rows = [[j.name, list(j.track_ids), list(j.labels)] for j in jobs]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def _validate(opts: PreprocessOptions) -> None:
    if opts.jobs is not None and opts.jobs < 1:
        raise BadInput(f"--jobs must be at least 1 (got {opts.jobs}); omit it to use all cores")
    if opts.min_seconds < 0:
        raise BadInput(f"--min-seconds must be 0 or more (got {opts.min_seconds})")
    if opts.shard_size < 1:
        raise BadInput(f"--shard-size must be at least 1 (got {opts.shard_size})")
    if not opts.audio_dir.is_dir():
        raise BadInput(
            f"audio dir {opts.audio_dir} does not exist; pass --audio-dir pointing at fma_small/ "
            "or fma_large/"
        )
    if opts.backend not in BACKENDS:
        raise BadInput(f"unknown --backend {opts.backend!r}; use one of {', '.join(BACKENDS)}")
    if opts.backend == "dask" and not opts.scheduler:
        raise BadInput(
            "--backend dask needs --scheduler tcp://HOST:8786 (a running dask scheduler)"
        )
    if opts.subset not in fma.SUBSETS:
        raise BadInput(f"unknown subset {opts.subset!r}; use one of {', '.join(fma.SUBSETS)}")


def run_preprocess(opts: PreprocessOptions) -> Manifest:
    """Build (or resume) the cache described by ``opts``; returns the final manifest."""
    t0 = time.perf_counter()
    _validate(opts)
    # Absolute paths: dask workers may run elsewhere, with another working directory.
    opts = dataclasses.replace(
        opts,
        audio_dir=opts.audio_dir.absolute(),
        out=opts.out.absolute(),
        metadata_dir=opts.metadata_dir.absolute(),
    )
    cfg = opts.feature_config()
    selection = fma.select(fma.load_tracks(opts.metadata_dir), opts.subset)
    if selection.tracks.empty:
        raise BadInput(f"subset {opts.subset} has no labelled tracks in {opts.metadata_dir}")
    present = sum(fma.audio_path(opts.audio_dir, t).is_file() for t in selection.tracks["track_id"])
    if present == 0:
        raise BadInput(
            f"no audio of subset {opts.subset} found under {opts.audio_dir}; pass --audio-dir "
            f"pointing at fma_{opts.subset}/ or fma_large/"
        )
    jobs = plan_shards(selection, opts.shard_size)
    plan = {
        "genres": list(selection.genres),
        "tracks_sha256": _fingerprint(jobs),
        "feature_config": cfg.to_dict(),
        "subset": opts.subset,
        "shard_size": opts.shard_size,
        "min_seconds": opts.min_seconds,
        "format_version": Manifest.__dataclass_fields__["format_version"].default,
    }
    _check_out_dir(opts.out, plan)
    (opts.out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    log = _log(opts.progress)
    if present < len(selection.tracks):
        log(
            f"warning: {len(selection.tracks) - present} of {len(selection.tracks)} tracks have "
            f"no file under {opts.audio_dir}; they will be recorded as missing"
        )
    with CacheLock(opts.out) as lock:
        if lock.stale_pid is not None:
            log(f"taking over the lock of an interrupted run (pid {lock.stale_pid})")
        manifest = Manifest(
            feature_config=cfg.to_dict(),
            subset=opts.subset,
            genres=list(selection.genres),
            plan=plan,
            source={"audio_dir": str(opts.audio_dir), "metadata_dir": str(opts.metadata_dir)},
            skipped_no_genre=selection.skipped_no_genre,
            tool_version=__version__,
        )
        manifest.write(opts.out)
        for p in (opts.out / SHARDS_DIR).glob(f"*{PARTIAL_SUFFIX}*"):
            p.unlink(missing_ok=True)  # left by a killed run: never trusted
        todo = [j for j in jobs if not _is_done(opts.out / j.name)]
        done_tracks = sum(len(j.track_ids) for j in jobs if j not in todo)
        if len(todo) < len(jobs):
            log(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} shards already done")
        new_tracks = _run_jobs(todo, opts, cfg, done_tracks, sum(len(j.track_ids) for j in jobs))
        elapsed = time.perf_counter() - t0
        manifest = _finish(opts, manifest, jobs, selection, new_tracks, elapsed)
    return manifest


def _is_done(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        read_shard(path)
        return True
    except ShardError:
        path.unlink()  # cannot happen through rename-when-complete; rebuild if it does
        return False


def _run_jobs(
    todo: list[ShardJob],
    opts: PreprocessOptions,
    cfg: FeatureConfig,
    done_tracks: int,
    total_tracks: int,
) -> int:
    """Run shard jobs with joblib; progress counts tracks. Returns tracks processed."""
    from joblib import Parallel, delayed

    bar = tqdm(
        total=total_tracks,
        initial=done_tracks,
        unit="track",
        desc="preprocess",
        disable=not opts.progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    processed = 0
    args = (opts.out, opts.audio_dir, cfg, opts.min_seconds)
    try:
        with _executor(opts):
            # loky: all local cores by default; dask: all of the cluster's workers (-1)
            n_jobs = opts.jobs or (len(os.sched_getaffinity(0)) if opts.backend == "loky" else -1)
            if n_jobs > 0:
                n_jobs = min(n_jobs, max(len(todo), 1))
            results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(build_shard)(job, *args) for job in todo
            )
            for r in results:
                n_done = r.tracks + r.failed
                processed += n_done
                bar.update(n_done)
    finally:
        bar.close()
    return processed


@contextlib.contextmanager
def _executor(opts: PreprocessOptions) -> Iterator[None]:
    """joblib backend for the shard jobs: local loky processes or a dask cluster.

    With dask, the workers write shards straight into the cache directory, which
    must be on storage they all see; manifest and CSVs are written here, by the client.
    """
    from joblib import parallel_config

    if opts.backend == "loky":
        with parallel_config(backend="loky", inner_max_num_threads=1):
            yield
        return
    try:
        from dask.distributed import Client
    except ImportError:
        raise BadInput(
            "--backend dask needs dask and distributed; install them with "
            "pip install 'mrnet[cluster]'"
        ) from None
    try:
        client = Client(opts.scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise BadInput(
            f"cannot reach the dask scheduler at {opts.scheduler} ({type(e).__name__}); "
            "start one with `dask scheduler` or fix --scheduler"
        ) from None
    try:
        with parallel_config(backend="dask", client=client):
            yield
    finally:
        client.close()


def _finish(
    opts: PreprocessOptions,
    manifest: Manifest,
    jobs: list[ShardJob],
    selection: fma.Selection,
    new_tracks: int,
    elapsed: float,
) -> Manifest:
    """Index every shard into tracks.csv / failures.csv and complete the manifest."""
    genre_of = dict(zip(selection.tracks["track_id"], selection.tracks["genre"]))
    rows, failures, shards = [], [], []
    splits: dict[str, dict] = {
        s: {"tracks": 0, "failed": 0, "shards": 0, "frames": 0} for s in fma.SPLITS
    }
    hours = 0.0
    for job in jobs:
        idx = read_shard(opts.out / job.name)
        n_frames = np.diff(idx.offsets)
        for row, (tid, label) in enumerate(zip(idx.track_id, idx.label)):
            rows.append(
                (
                    int(tid),
                    job.split,
                    genre_of[int(tid)],
                    int(label),
                    job.name,
                    row,
                    int(n_frames[row]),
                )
            )
        for tid, reason in zip(idx.failed_track_id, idx.failed_reason):
            failures.append((int(tid), str(fma.audio_path(opts.audio_dir, int(tid))), reason))
        hours += float(idx.seconds.sum()) / 3600
        shards.append(
            {
                "name": job.name,
                "split": job.split,
                "tracks": len(idx),
                "failed": len(idx.failed_track_id),
                "frames": int(idx.mel_shape[0]),
            }
        )
        s = splits[job.split]
        s["tracks"] += len(idx)
        s["failed"] += len(idx.failed_track_id)
        s["shards"] += 1
        s["frames"] += int(idx.mel_shape[0])
    tracks = pd.DataFrame(rows, columns=TRACK_COLUMNS)
    fails = pd.DataFrame(failures, columns=FAILURE_COLUMNS).sort_values("track_id")
    write_atomic(opts.out / TRACKS, tracks.to_csv(index=False))
    write_atomic(opts.out / FAILURES, fails.to_csv(index=False))
    size = dir_bytes(opts.out)
    manifest.splits = splits
    manifest.shards = shards
    manifest.summary = {
        "cached": len(tracks),
        "failed": len(fails),
        "failed_by_reason": dict(sorted(Counter(fails["reason"]).items())),
        "skipped_no_genre": selection.skipped_no_genre,
        "hours_of_audio": round(hours, 4),
        "cache_bytes": size,
        "last_run": {
            "tracks_processed": new_tracks,
            "seconds": round(elapsed, 2),
            "tracks_per_s": round(new_tracks / elapsed, 2) if elapsed > 0 else 0.0,
        },
    }
    manifest.status = "complete"
    manifest.write(opts.out)
    return manifest


def format_summary(m: Manifest) -> str:
    s = m.summary
    reasons = ", ".join(f"{k} {v}" for k, v in s["failed_by_reason"].items()) or "none"
    run = s["last_run"]
    return (
        f"cached {s['cached']} tracks ({s['hours_of_audio']:.2f} h of audio), "
        f"failed {s['failed']} ({reasons}), skipped without genre {s['skipped_no_genre']}\n"
        f"cache size {s['cache_bytes'] / 2**20:.1f} MiB; this run: {run['tracks_processed']} "
        f"tracks in {run['seconds']:.1f} s ({run['tracks_per_s']:.1f} tracks/s)"
    )


def _log(enabled: bool):
    def log(msg: str) -> None:
        if enabled:
            print(msg, file=sys.stderr, flush=True)

    return log
